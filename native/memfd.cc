// File descriptors: memfd creation, sizing, sealing, reopening, dup and close.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "errors.h"
#include "teardown.h"

namespace dmamem {

namespace {

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  unsigned flags = static_cast<unsigned>(I64(info[1]));
  // Always close-on-exec: a leaked memfd would pin its memory in every child process.
  int fd = memfd_create(name.c_str(), flags | MFD_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, errno, "memfd_create", "memfd_create(name=\"" + name + "\", flags=" + Hex(flags | MFD_CLOEXEC) + ")");
    return env.Undefined();
  }
  TrackFd(env, fd);
  return Napi::Number::New(env, fd);
}

Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info[0]);
  off_t size = static_cast<off_t>(I64(info[1]));
  if (ftruncate(fd, size) != 0) {
    ThrowErrno(env, errno, "ftruncate", "ftruncate(fd=" + std::to_string(fd) + ", size=" + std::to_string(size) + ")");
  }
  return env.Undefined();
}

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info[0]);
  int mode = I32(info[1]);
  off_t offset = static_cast<off_t>(I64(info[2]));
  off_t length = static_cast<off_t>(I64(info[3]));
  if (fallocate(fd, mode, offset, length) != 0) {
    ThrowErrno(env, errno, "fallocate",
               "fallocate(fd=" + std::to_string(fd) + ", mode=" + Hex(static_cast<unsigned>(mode)) + ", offset=" +
                   Hex(static_cast<uint64_t>(offset)) + ", length=" + std::to_string(length) + ")");
  }
  return env.Undefined();
}

Napi::Value AddSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info[0]);
  int seals = I32(info[1]);
  if (fcntl(fd, F_ADD_SEALS, seals) != 0) {
    ThrowErrno(env, errno, "fcntl",
               "fcntl(fd=" + std::to_string(fd) + ", F_ADD_SEALS, seals=" + Hex(static_cast<unsigned>(seals)) + ")");
  }
  return env.Undefined();
}

Napi::Value GetSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info[0]);
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    ThrowErrno(env, errno, "fcntl", "fcntl(fd=" + std::to_string(fd) + ", F_GET_SEALS)");
    return env.Undefined();
  }
  return Napi::Number::New(env, seals);
}

Napi::Value FstatSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info[0]);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ThrowErrno(env, errno, "fstat", "fstat(fd=" + std::to_string(fd) + ")");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(st.st_size));
}

Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int flags = I32(info[1]);
  int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, errno, "open", "open(path=\"" + path + "\", flags=" + Hex(static_cast<unsigned>(flags | O_CLOEXEC)) + ")");
    return env.Undefined();
  }
  TrackFd(env, fd);
  return Napi::Number::New(env, fd);
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info[0]);
  // F_DUPFD_CLOEXEC sets close-on-exec atomically, unlike dup() followed by fcntl(F_SETFD).
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) {
    ThrowErrno(env, errno, "dup", "fcntl(fd=" + std::to_string(fd) + ", F_DUPFD_CLOEXEC)");
    return env.Undefined();
  }
  TrackFd(env, nfd);
  return Napi::Number::New(env, nfd);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info[0]);
  // Linux releases the descriptor even when close() reports an error.
  UntrackFd(env, fd);
  if (close(fd) != 0) {
    ThrowErrno(env, errno, "close", "close(fd=" + std::to_string(fd) + ")");
  }
  return env.Undefined();
}

}  // namespace

bool InitMemfd(Napi::Env env, Napi::Object exports) {
  if (!Export(env, exports, "memfdCreate", MemfdCreate, "sn")) return false;
  if (!Export(env, exports, "ftruncate", Ftruncate, "nn")) return false;
  if (!Export(env, exports, "fallocate", Fallocate, "nnnn")) return false;
  if (!Export(env, exports, "addSeals", AddSeals, "nn")) return false;
  if (!Export(env, exports, "getSeals", GetSeals, "n")) return false;
  if (!Export(env, exports, "fstatSize", FstatSize, "n")) return false;
  if (!Export(env, exports, "open", Open, "sn")) return false;
  if (!Export(env, exports, "dup", Dup, "n")) return false;
  if (!Export(env, exports, "close", Close, "n")) return false;
  return true;
}

}  // namespace dmamem
