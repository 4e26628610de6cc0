// Error reporting and argument conversion shared by every facility of the addon.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace dmamem {

// Builds an Error shaped like Node's fs errors: code ('ENOMEM'), errno (negative, as Node does),
// syscall ('mmap') and message "ENOMEM: Cannot allocate memory, mmap(addr=0x0, ...)".
// Returned unthrown so a caller can attach extra properties (mapFixedBatch adds `index`).
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& call);

// ErrnoError, thrown as a pending JS exception (C++ exceptions are disabled: the caller returns next).
void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& call);

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
