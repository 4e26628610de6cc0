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

// False when the environment is torn down while the addon loads (see addon.cc).
bool InitTeardown(Napi::Env env, Napi::Object exports);

}  // namespace dmamem
