// Error reporting and argument conversion shared by every facility of the addon, and the one way
// the addon throws: quietly giving up when the JS environment can no longer run JS (terminating).
#pragma once

#include <napi.h>

#include "export.h"

#include <cstdint>
#include <string>

namespace dmamem {

// Throws `error` as the pending JS exception. While a worker is being terminated (or any
// environment torn down) Node-API refuses to throw (napi_pending_exception with no exception
// pending), and node-addon-api's ThrowAsJavaScriptException answers that with napi_fatal_error:
// SIGABRT for the whole process. Nobody is left to catch the error then, so it is dropped. An
// exception already pending is kept (the first failure is the one to report). A refused throw also
// halts the environment (teardown.h): its caller returns undefined, which no JS may act on. Every
// throw in the addon goes through here; never call ThrowAsJavaScriptException directly.
void Throw(napi_env env, napi_value error);

// Sets obj[key] = value; a failure can only mean the environment is terminating, so it is ignored.
void SetQuiet(napi_env env, napi_value obj, const char* key, napi_value value);

// Builds an Error shaped like Node's fs errors: code ('ENOMEM'), errno (negative, as Node does),
// syscall ('mmap') and message "ENOMEM: Cannot allocate memory, mmap(addr=0x0, ...)".
// Returned unthrown so a caller can attach extra properties (mapFixedBatch adds `index`); nullptr
// when the environment is terminating and no object can be made.
napi_value ErrnoError(napi_env env, int err, const char* syscall, const std::string& call);

// ErrnoError, thrown as a pending JS exception (C++ exceptions are disabled: the caller returns next).
void ThrowErrno(napi_env env, int err, const char* syscall, const std::string& call);

// Plain Error / RangeError with an optional code property, thrown through Throw().
void ThrowError(napi_env env, const std::string& message, const char* code = nullptr);
void ThrowRangeError(napi_env env, const std::string& message);
void ThrowTypeError(napi_env env, const std::string& message);

// Throws for a failed Node-API call (its last error message), through Throw(). Returns true if
// status is not napi_ok, so a caller writes `if (Failed(env, status)) return env.Undefined();`.
bool Failed(napi_env env, napi_status status);

// "0x1f": addresses, flags and offsets read best in hex in error messages.
std::string Hex(uint64_t v);

// JS numbers are doubles, exact below 2^53, which covers every user address and size we take.
inline uint64_t U64(const Napi::Value& v) { return static_cast<uint64_t>(v.As<Napi::Number>().Int64Value()); }
inline int64_t I64(const Napi::Value& v) { return v.As<Napi::Number>().Int64Value(); }
inline int I32(const Napi::Value& v) { return v.As<Napi::Number>().Int32Value(); }
inline void* Ptr(const Napi::Value& v) { return reinterpret_cast<void*>(static_cast<uintptr_t>(U64(v))); }
inline Napi::Number Num(Napi::Env env, uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }
inline Napi::Number Num(Napi::Env env, const void* p) {
  return Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(p)));
}

}  // namespace dmamem
