// JS access to mapped bytes: external ArrayBuffers, detaching, external-memory accounting, raw copies.
#include <cstring>
#include <string>

#include "errors.h"

namespace dmamem {

namespace {

// The mapping's owner unmaps it; V8 collecting the ArrayBuffer must not free anything.
void NoopFinalize(napi_env, void*, void*) {}

Napi::Value ExternalArrayBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* addr = Ptr(info[0]);
  size_t length = static_cast<size_t>(U64(info[1]));
  // Zero-length views need no backing store, and must work even where external buffers are banned.
  if (length == 0) return Napi::ArrayBuffer::New(env, 0);
  napi_value result;
  // The C API, not Napi::ArrayBuffer::New, so the sandbox refusal is visible as a status.
  napi_status status = napi_create_external_arraybuffer(env, addr, length, NoopFinalize, nullptr, &result);
  if (status == napi_no_external_buffers_allowed) {
    ThrowError(env,
               "This JavaScript runtime forbids external ArrayBuffers (the V8 sandbox is enabled, e.g. Electron), "
               "so zero-copy views over mapped memory are impossible; use copyOut/memcpy instead.",
               "ERR_DMAMEM_NO_EXTERNAL_BUFFERS");
    return env.Undefined();
  }
  // A terminating worker fails here (napi_pending_exception): Failed() then throws nothing.
  if (Failed(env, status)) return env.Undefined();
  return Napi::Value(env, result);
}

Napi::Value Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  napi_value buffer = info[0];
  bool detached = false;
  if (Failed(env, napi_is_detached_arraybuffer(env, buffer, &detached))) return env.Undefined();
  // Detaching twice is harmless: an unmap path may run after a view was already revoked.
  if (detached) return env.Undefined();
  Failed(env, napi_detach_arraybuffer(env, buffer));
  return env.Undefined();
}

Napi::Value AdjustExternalMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t total = Napi::MemoryManagement::AdjustExternalMemory(env, I64(info[0]));
  return Napi::Number::New(env, static_cast<double>(total));
}

Napi::Value Memset(const Napi::CallbackInfo& info) {
  std::memset(Ptr(info[0]), I32(info[1]) & 0xff, static_cast<size_t>(U64(info[2])));
  return info.Env().Undefined();
}

Napi::Value Memcpy(const Napi::CallbackInfo& info) {
  std::memcpy(Ptr(info[0]), Ptr(info[1]), static_cast<size_t>(U64(info[2])));
  return info.Env().Undefined();
}

Napi::Value CopyOut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const void* addr = Ptr(info[0]);
  uint64_t length = U64(info[1]);
  Napi::Uint8Array target = info[2].As<Napi::Uint8Array>();
  uint64_t offset = U64(info[3]);
  // The last guard before a raw memcpy into the JS heap, so it stays even though TS validates.
  if (offset > target.ByteLength() || length > target.ByteLength() - offset) {
    ThrowRangeError(env, "copyOut: targetOffset " + std::to_string(offset) + " + length " + std::to_string(length) +
                             " exceeds the target's " + std::to_string(target.ByteLength()) + " bytes");
    return env.Undefined();
  }
  if (length == 0) return env.Undefined();
  // Data() already points at the view's byteOffset inside its ArrayBuffer.
  std::memcpy(static_cast<uint8_t*>(target.Data()) + offset, addr, static_cast<size_t>(length));
  return env.Undefined();
}

Napi::Value AddressOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value value = info[0];
  if (value.IsArrayBuffer()) {
    Napi::ArrayBuffer ab = value.As<Napi::ArrayBuffer>();
    if (ab.ByteLength() == 0) return Napi::Number::New(env, 0);
    return Num(env, ab.Data());
  }
  // Node-API (v20) has no SharedArrayBuffer accessor, but a typed array over one reports its data.
  // Both steps may run JS and so fail in a terminating worker: stop at the first empty result.
  Napi::Value ctor = env.Global().Get("Uint8Array");
  if (ctor.IsEmpty() || env.IsExceptionPending()) return env.Undefined();
  Napi::Value view = ctor.As<Napi::Function>().New({value});
  if (view.IsEmpty() || env.IsExceptionPending()) return env.Undefined();
  Napi::Uint8Array u8 = view.As<Napi::Uint8Array>();
  if (u8.ByteLength() == 0) return Napi::Number::New(env, 0);
  return Num(env, u8.Data());
}

}  // namespace

bool InitBuffer(Napi::Env env, Napi::Object exports) {
  if (!Export(env, exports, "externalArrayBuffer", ExternalArrayBuffer, "an")) return false;
  if (!Export(env, exports, "detach", Detach, "o")) return false;
  if (!Export(env, exports, "adjustExternalMemory", AdjustExternalMemory, "n")) return false;
  if (!Export(env, exports, "memset", Memset, "ann")) return false;
  if (!Export(env, exports, "memcpy", Memcpy, "aan")) return false;
  if (!Export(env, exports, "copyOut", CopyOut, "anun")) return false;
  if (!Export(env, exports, "addressOf", AddressOf, "o")) return false;
  return true;
}

}  // namespace dmamem
