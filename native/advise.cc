// Advice, locking, syncing and residency of mapped ranges: madvise, mlock2, munlock, msync, mincore.
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "errors.h"

namespace dmamem {

namespace {

std::string Call(const char* name, uint64_t addr, uint64_t length, const char* key, int value) {
  std::string s = std::string(name) + "(addr=" + Hex(addr) + ", length=" + std::to_string(length);
  if (key != nullptr) s += std::string(", ") + key + "=" + Hex(static_cast<unsigned>(value));
  return s + ")";
}

Napi::Value Madvise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t length = U64(info[1]);
  int advice = I32(info[2]);
  if (madvise(reinterpret_cast<void*>(addr), length, advice) != 0) {
    // advice is an enumeration, not a bit set, so it reads better in decimal.
    ThrowErrno(env, errno, "madvise",
               "madvise(addr=" + Hex(addr) + ", length=" + std::to_string(length) + ", advice=" + std::to_string(advice) + ")");
  }
  return env.Undefined();
}

Napi::Value Mlock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t length = U64(info[1]);
  int flags = I32(info[2]);
  // The raw syscall: MLOCK_ONFAULT needs mlock2, which older glibc versions do not wrap.
  if (syscall(SYS_mlock2, reinterpret_cast<void*>(addr), static_cast<size_t>(length), static_cast<unsigned>(flags)) != 0) {
    ThrowErrno(env, errno, "mlock2", Call("mlock2", addr, length, "flags", flags));
  }
  return env.Undefined();
}

Napi::Value Munlock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t length = U64(info[1]);
  if (munlock(reinterpret_cast<void*>(addr), length) != 0) {
    ThrowErrno(env, errno, "munlock", Call("munlock", addr, length, nullptr, 0));
  }
  return env.Undefined();
}

Napi::Value Msync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t length = U64(info[1]);
  int flags = I32(info[2]);
  if (msync(reinterpret_cast<void*>(addr), length, flags) != 0) {
    ThrowErrno(env, errno, "msync", Call("msync", addr, length, "flags", flags));
  }
  return env.Undefined();
}

Napi::Value Mincore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t length = U64(info[1]);
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  size_t pages = static_cast<size_t>((length + page - 1) / page);
  Napi::Uint8Array vec = Napi::Uint8Array::New(env, pages);
  if (vec.IsEmpty() || env.IsExceptionPending()) return env.Undefined();  // a terminating worker
  if (mincore(reinterpret_cast<void*>(addr), length, vec.Data()) != 0) {
    ThrowErrno(env, errno, "mincore", Call("mincore", addr, length, nullptr, 0));
    return env.Undefined();
  }
  return vec;
}

}  // namespace

bool InitAdvise(Napi::Env env, Napi::Object exports) {
  if (!Export(env, exports, "madvise", Madvise, "ann")) return false;
  if (!Export(env, exports, "mlock", Mlock, "ann")) return false;
  if (!Export(env, exports, "munlock", Munlock, "an")) return false;
  if (!Export(env, exports, "msync", Msync, "ann")) return false;
  if (!Export(env, exports, "mincore", Mincore, "an")) return false;
  return true;
}

}  // namespace dmamem
