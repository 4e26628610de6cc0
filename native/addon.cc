// Module entry point: merges each facility's exports into one context-aware addon.
#include <napi.h>

namespace dmamem {
bool InitMemfd(Napi::Env env, Napi::Object exports);
bool InitMapping(Napi::Env env, Napi::Object exports);
bool InitAdvise(Napi::Env env, Napi::Object exports);
bool InitBuffer(Napi::Env env, Napi::Object exports);
bool InitPagemap(Napi::Env env, Napi::Object exports);
bool InitSysinfo(Napi::Env env, Napi::Object exports);
bool InitTeardown(Napi::Env env, Napi::Object exports);
bool InitFutex(Napi::Env env, Napi::Object exports);
bool InitIpc(Napi::Env env, Napi::Object exports);
bool InitArena(Napi::Env env, Napi::Object exports);
}  // namespace dmamem

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // First: the other facilities record what they map and open in this environment's instance data.
  // Each step returns false only when the environment is being torn down while the addon loads (a
  // worker terminated during require): no JS will see the exports, so init just stops, quietly.
  (void)(dmamem::InitTeardown(env, exports) && dmamem::InitMemfd(env, exports) && dmamem::InitMapping(env, exports) &&
         dmamem::InitAdvise(env, exports) && dmamem::InitBuffer(env, exports) && dmamem::InitPagemap(env, exports) &&
         dmamem::InitSysinfo(env, exports) && dmamem::InitFutex(env, exports) &&
         dmamem::InitIpc(env, exports) && dmamem::InitArena(env, exports));
  return exports;
}

// Node-API modules are context-aware, so worker_threads can load this addon too.
NODE_API_MODULE(dmamem, Init)
