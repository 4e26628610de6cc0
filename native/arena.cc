// Buffers for the arena's hot path: a Buffer over exactly [addr, addr+length) of mapped memory, made
// with V8's own external backing store (no finalizer: the arena unmaps). Node-API's external
// ArrayBuffer is built as a full node::Buffer with a finalizer record and costs several times more.
#include <node.h>
#include <node_buffer.h>
#include <v8.h>

#include <cstring>

#include "errors.h"

namespace dmamem {

namespace {

// Node-API values are V8 local handles (the same slot pointer): see node's js_native_api_v8.h.
napi_value ToNapi(v8::Local<v8::Value> local) {
  napi_value v;
  static_assert(sizeof(v) == sizeof(local), "napi_value is a v8::Local");
  std::memcpy(static_cast<void*>(&v), static_cast<const void*>(&local), sizeof(v));
  return v;
}

Napi::Value ArenaBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* addr = Ptr(info[0]);
  size_t length = static_cast<size_t>(U64(info[1]));
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  // A terminating worker runs no more JS: nothing to hand out (and nothing to throw, see errors.h).
  if (isolate == nullptr || isolate->IsExecutionTerminating()) return env.Undefined();
  std::unique_ptr<v8::BackingStore> store = v8::ArrayBuffer::NewBackingStore(addr, length, v8::BackingStore::EmptyDeleter, nullptr);
  v8::Local<v8::ArrayBuffer> ab = v8::ArrayBuffer::New(isolate, std::move(store));
  v8::Local<v8::Object> buffer;
  if (!node::Buffer::New(isolate, ab, 0, length).ToLocal(&buffer)) return env.Undefined();
  return Napi::Value(env, ToNapi(buffer));
}

}  // namespace

bool InitArena(Napi::Env env, Napi::Object exports) {
  return Export(env, exports, "arenaBuffer", ArenaBuffer);
}

}  // namespace dmamem
