// Module entry point: merges each facility's exports into one context-aware addon.
#include <napi.h>

namespace dmamem {
void InitMemfd(Napi::Env env, Napi::Object exports);
void InitMapping(Napi::Env env, Napi::Object exports);
void InitAdvise(Napi::Env env, Napi::Object exports);
void InitBuffer(Napi::Env env, Napi::Object exports);
void InitPagemap(Napi::Env env, Napi::Object exports);
void InitSysinfo(Napi::Env env, Napi::Object exports);
void InitTeardown(Napi::Env env, Napi::Object exports);
}  // namespace dmamem

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // First: the other facilities record what they map and open in this environment's instance data.
  dmamem::InitTeardown(env, exports);
  dmamem::InitMemfd(env, exports);
  dmamem::InitMapping(env, exports);
  dmamem::InitAdvise(env, exports);
  dmamem::InitBuffer(env, exports);
  dmamem::InitPagemap(env, exports);
  dmamem::InitSysinfo(env, exports);
  return exports;
}

// Node-API modules are context-aware, so worker_threads can load this addon too.
NODE_API_MODULE(dmamem, Init)
