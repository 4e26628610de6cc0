// What each JS environment (the main thread, each worker) has mapped and opened through the addon,
// so that tearing the environment down (a worker ending, even by terminate()) releases it.
#pragma once
#include <napi.h>

#include <cstdint>

namespace dmamem {

// Called by the mapping and memfd wrappers right after the system call succeeds.
void TrackRange(napi_env env, uint64_t addr, uint64_t length);
void UntrackRange(napi_env env, uint64_t addr, uint64_t length);
void TrackFd(napi_env env, int fd);
void UntrackFd(napi_env env, int fd);

// Whether this environment may still be served (the export gate, export.h, reads it on every call).
// Halted: the environment can no longer run JS (a worker being terminated) and every later call does
// nothing and returns undefined; it is for good. Threw: the last call left an exception pending,
// which Node drops instead of throwing if JS stopped being callable before that call returned, so the
// next call first checks that JS still runs. What the environment holds is released at teardown.
struct EnvStatus {
  bool halted = false;
  bool threw = false;
};
EnvStatus* Status(napi_env env);
void Halt(napi_env env);

// False when the environment is torn down while the addon loads (see addon.cc).
bool InitTeardown(Napi::Env env, Napi::Object exports);

}  // namespace dmamem
