// How every native function is exported: behind one gate that checks its arguments' types and
// whether this JS environment can still be served, before the function body runs.
#pragma once
#include <napi.h>

namespace dmamem {

// exports[name] = a function running `fn` (with info.Data() == data) behind the gate:
// - once the environment is halted (teardown.h: it can no longer run JS, e.g. a worker being
//   terminated) every call returns undefined and does nothing. The JS still running in a
//   terminating worker until V8 stops it would otherwise act on the undefined of a call whose throw
//   was refused or dropped: mapSharedFd's cleanup once ran munmap(undefined -> 0, 8 MiB) and unmapped
//   node's own ELF header, so the next dlopen crashed the whole process;
// - each argument must match `signature`, one letter per argument, else a TypeError and nothing
//   runs: 'a' an address (an integer above 0), 'n' a finite number, 's' a string, 'b' a boolean,
//   'o' an object, 'u' a Uint8Array, 'f' a Float64Array, 'g' a BigUint64Array. Node-addon-api's
//   conversions read anything else as 0, and 0 is an address no call here may ever act on.
// False when the environment is being torn down while the addon loads (a worker terminated during
// require): module init then stops quietly.
bool Export(Napi::Env env, Napi::Object exports, const char* name, Napi::Function::Callback fn, const char* signature,
            void* data = nullptr);

}  // namespace dmamem
