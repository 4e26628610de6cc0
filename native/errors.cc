// Turns an errno from a failed syscall into a Node-fs-style JS Error, and throws without ever
// turning a terminating environment into a fatal error.
#include "errors.h"
#include "teardown.h"

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
    case EPIPE: return "EPIPE";
    case ENOTSOCK: return "ENOTSOCK";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOTCONN: return "ENOTCONN";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    default: return nullptr;
  }
}

napi_value String(napi_env env, const std::string& s) {
  napi_value v = nullptr;
  if (napi_create_string_utf8(env, s.data(), s.size(), &v) != napi_ok) return nullptr;
  return v;
}

enum class Kind { kError, kRange, kType };

napi_value MakeError(napi_env env, const std::string& message, Kind kind) {
  napi_value msg = String(env, message);
  napi_value error = nullptr;
  if (msg == nullptr) return nullptr;
  napi_status status = kind == Kind::kRange  ? napi_create_range_error(env, nullptr, msg, &error)
                       : kind == Kind::kType ? napi_create_type_error(env, nullptr, msg, &error)
                                             : napi_create_error(env, nullptr, msg, &error);
  return status == napi_ok ? error : nullptr;
}

}  // namespace

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

void Throw(napi_env env, napi_value error) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) != napi_ok || pending) return;
  // No error object could be made: the environment is terminating too.
  if (error == nullptr) {
    Halt(env);
    return;
  }
  // Fails only when JS cannot run any more (a terminating worker): there is no one to tell, and the
  // caller's undefined must not be acted on by the JS that runs until V8 stops it.
  if (napi_throw(env, error) != napi_ok) Halt(env);
}

void SetQuiet(napi_env env, napi_value obj, const char* key, napi_value value) {
  if (obj != nullptr && value != nullptr) (void)napi_set_named_property(env, obj, key, value);
}

napi_value ErrnoError(napi_env env, int err, const char* syscall, const std::string& call) {
  const char* name = ErrnoName(err);
  std::string code = name != nullptr ? name : "E" + std::to_string(err);
  // GNU strerror_r: thread-safe (workers load the addon too) and returns the message pointer.
  char buf[128];
  const char* text = strerror_r(err, buf, sizeof buf);
  napi_value e = MakeError(env, code + ": " + text + ", " + call, Kind::kError);
  napi_value errnoValue = nullptr;
  if (e == nullptr || napi_create_double(env, -err, &errnoValue) != napi_ok) return e;
  SetQuiet(env, e, "code", String(env, code));
  SetQuiet(env, e, "errno", errnoValue);
  SetQuiet(env, e, "syscall", String(env, syscall));
  return e;
}

void ThrowErrno(napi_env env, int err, const char* syscall, const std::string& call) {
  Throw(env, ErrnoError(env, err, syscall, call));
}

void ThrowError(napi_env env, const std::string& message, const char* code) {
  napi_value e = MakeError(env, message, Kind::kError);
  if (code != nullptr) SetQuiet(env, e, "code", String(env, code));
  Throw(env, e);
}

void ThrowRangeError(napi_env env, const std::string& message) { Throw(env, MakeError(env, message, Kind::kRange)); }

void ThrowTypeError(napi_env env, const std::string& message) { Throw(env, MakeError(env, message, Kind::kType)); }

bool Failed(napi_env env, napi_status status) {
  if (status == napi_ok) return false;
  const napi_extended_error_info* info = nullptr;
  std::string message = "Node-API call failed";
  if (napi_get_last_error_info(env, &info) == napi_ok && info != nullptr && info->error_message != nullptr) message = info->error_message;
  ThrowError(env, message);
  return true;
}


}  // namespace dmamem
