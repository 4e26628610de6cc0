// Turns an errno from a failed syscall into a Node-fs-style JS Error.
#include "errors.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace dmamem {

namespace {

// Node's own table is not exposed to addons; these are the errnos our syscalls can produce.
const char* ErrnoName(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case ERANGE: return "ERANGE";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EOVERFLOW: return "EOVERFLOW";
    case ETXTBSY: return "ETXTBSY";
    case EFBIG: return "EFBIG";
    default: return nullptr;
  }
}

}  // namespace

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& call) {
  const char* name = ErrnoName(err);
  std::string code = name != nullptr ? name : "E" + std::to_string(err);
  // GNU strerror_r: thread-safe (workers load the addon too) and returns the message pointer.
  char buf[128];
  const char* text = strerror_r(err, buf, sizeof buf);
  Napi::Error e = Napi::Error::New(env, code + ": " + text + ", " + call);
  Napi::Object o = e.Value();
  o.Set("code", Napi::String::New(env, code));
  o.Set("errno", Napi::Number::New(env, -err));
  o.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& call) {
  ErrnoError(env, err, syscall, call).ThrowAsJavaScriptException();
}

}  // namespace dmamem
