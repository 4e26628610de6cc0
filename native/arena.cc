// Fast external buffers, for the arena's hot path and Region views: an ArrayBuffer (or a Buffer)
// over exactly [addr, addr+length) of mapped memory, with no finalizer (the owner detaches and
// unmaps).
//
// Built from source, they are made with V8's own external backing store: Node-API's external
// ArrayBuffer is built as a full node::Buffer with a finalizer record and costs several times more.
// The prebuilt binary (DMAMEM_NAPI_ONLY, see binding.gyp) must load on every Node version from 20
// on, so it uses Node-API only, and pays that cost. A build from source carries both and takes the
// V8 path only on the Node major it was compiled for (V8's C++ API is not stable across majors):
// a build left behind by a Node upgrade stays safe, only slower.
#ifndef DMAMEM_NAPI_ONLY
#include <node.h>
#include <node_buffer.h>
#include <node_version.h>
#include <v8.h>
#endif

#include <cstring>

#include "errors.h"
#include "teardown.h"

namespace dmamem {

namespace {

const char kNoExternalBuffers[] =
    "This JavaScript runtime forbids external ArrayBuffers (the V8 sandbox is enabled, e.g. Electron), "
    "so zero-copy views over mapped memory are impossible; use copyOut/memcpy instead.";

// napi_create_external_* with a null finalizer; refused runtimes get the error externalArrayBuffer gives.
bool Refused(napi_env env, napi_status status) {
  if (status == napi_ok) return false;
  if (status == napi_no_external_buffers_allowed) ThrowError(env, kNoExternalBuffers, "ERR_DMAMEM_NO_EXTERNAL_BUFFERS");
  else Halt(env);  // only a terminating environment fails otherwise: nothing to hand out
  return true;
}

Napi::Value NapiArenaBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  napi_value buffer;
  if (Refused(env, napi_create_external_buffer(env, static_cast<size_t>(U64(info[1])), Ptr(info[0]), nullptr, nullptr, &buffer))) return env.Undefined();
  return Napi::Value(env, buffer);
}

Napi::Value NapiViewArrayBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  napi_value ab;
  if (Refused(env, napi_create_external_arraybuffer(env, Ptr(info[0]), static_cast<size_t>(U64(info[1])), nullptr, nullptr, &ab))) return env.Undefined();
  return Napi::Value(env, ab);
}

#ifndef DMAMEM_NAPI_ONLY

// Node-API values are V8 local handles (the same slot pointer): see node's js_native_api_v8.h.
napi_value ToNapi(v8::Local<v8::Value> local) {
  napi_value v;
  static_assert(sizeof(v) == sizeof(local), "napi_value is a v8::Local");
  std::memcpy(static_cast<void*>(&v), static_cast<const void*>(&local), sizeof(v));
  return v;
}

// Where the runtime forbids external buffers (the V8 sandbox, e.g. Electron) V8 would abort on an
// external backing store: ask Node-API once, and refuse with the same error as externalArrayBuffer.
bool ExternalBuffersAllowed(napi_env env) {
  static int allowed = -1;
  if (allowed == -1) {
    static char probe[1];
    napi_value ab;
    napi_status status = napi_create_external_arraybuffer(env, probe, 1, nullptr, nullptr, &ab);
    if (status == napi_no_external_buffers_allowed) allowed = 0;
    else if (status == napi_ok) allowed = 1;
    else {
      Halt(env);  // a terminating environment: decide next time, in another one
      return false;
    }
  }
  if (allowed == 0) ThrowError(env, kNoExternalBuffers, "ERR_DMAMEM_NO_EXTERNAL_BUFFERS");
  return allowed == 1;
}

// The ArrayBuffer, or an empty handle when nothing can be made (terminating, or refused: thrown).
v8::Local<v8::ArrayBuffer> MakeArrayBuffer(napi_env env, void* addr, size_t length) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  // A terminating worker runs no more JS: nothing to hand out (and nothing to throw, see errors.h),
  // so the environment halts as when a throw is refused.
  if (isolate == nullptr || isolate->IsExecutionTerminating()) {
    Halt(env);
    return {};
  }
  if (!ExternalBuffersAllowed(env)) return {};
  std::unique_ptr<v8::BackingStore> store = v8::ArrayBuffer::NewBackingStore(addr, length, v8::BackingStore::EmptyDeleter, nullptr);
  return v8::ArrayBuffer::New(isolate, std::move(store));
}

Napi::Value ArenaBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t length = static_cast<size_t>(U64(info[1]));
  v8::Local<v8::ArrayBuffer> ab = MakeArrayBuffer(env, Ptr(info[0]), length);
  v8::Local<v8::Object> buffer;
  if (ab.IsEmpty() || !node::Buffer::New(v8::Isolate::GetCurrent(), ab, 0, length).ToLocal(&buffer)) return env.Undefined();
  return Napi::Value(env, ToNapi(buffer));
}

Napi::Value ViewArrayBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  v8::Local<v8::ArrayBuffer> ab = MakeArrayBuffer(env, Ptr(info[0]), static_cast<size_t>(U64(info[1])));
  if (ab.IsEmpty()) return env.Undefined();
  return Napi::Value(env, ToNapi(ab));
}

#endif  // DMAMEM_NAPI_ONLY

// Whether V8's API may be used here: built from source, and running on the Node major built for.
bool V8FastPathUsable(napi_env env) {
#ifdef DMAMEM_NAPI_ONLY
  (void)env;
  return false;
#else
  const napi_node_version* running = nullptr;
  return napi_get_node_version(env, &running) == napi_ok && running->major == NODE_MAJOR_VERSION;
#endif
}

}  // namespace

bool InitArena(Napi::Env env, Napi::Object exports) {
  const bool fast = V8FastPathUsable(env);
  exports.Set("v8FastPath", Napi::Boolean::New(env, fast));
#ifndef DMAMEM_NAPI_ONLY
  if (fast) return Export(env, exports, "arenaBuffer", ArenaBuffer, "an") && Export(env, exports, "viewArrayBuffer", ViewArrayBuffer, "an");
#endif
  return Export(env, exports, "arenaBuffer", NapiArenaBuffer, "an") && Export(env, exports, "viewArrayBuffer", NapiViewArrayBuffer, "an");
}

}  // namespace dmamem
