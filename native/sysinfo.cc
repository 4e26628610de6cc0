// System facts: page size, RLIMIT_MEMLOCK, thread id, and the Linux constants the TS layer uses.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "errors.h"

// Newer than some build hosts' headers; the values are kernel ABI and never change.
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif
#ifndef MFD_HUGE_1GB
#define MFD_HUGE_1GB (30U << 26)
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x10
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

namespace dmamem {

namespace {

Napi::Value MemlockLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct rlimit rl;
  if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) {
    ThrowErrno(env, errno, "getrlimit", "getrlimit(RLIMIT_MEMLOCK)");
    return env.Undefined();
  }
  auto value = [](rlim_t v) { return v == RLIM_INFINITY ? -1.0 : static_cast<double>(v); };
  Napi::Array result = Napi::Array::New(env, 2);
  (void)napi_set_element(env, result, 0, Napi::Number::New(env, value(rl.rlim_cur)));
  (void)napi_set_element(env, result, 1, Napi::Number::New(env, value(rl.rlim_max)));
  return result;
}

Napi::Value Gettid(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(syscall(SYS_gettid)));
}

// Built with plain Node-API calls whose failures (a worker terminated while it loads the addon)
// only make Constants return nullptr: module init then stops quietly.
napi_value Constants(napi_env env) {
  napi_value c = nullptr;
  if (napi_create_object(env, &c) != napi_ok) return nullptr;
  bool ok = true;
  auto set = [&](const char* key, double value) {
    napi_value v = nullptr;
    ok = ok && napi_create_double(env, value, &v) == napi_ok && napi_set_named_property(env, c, key, v) == napi_ok;
  };
#define DMAMEM_CONSTANT(name) set(#name, static_cast<double>(name))
  DMAMEM_CONSTANT(PROT_NONE);
  DMAMEM_CONSTANT(PROT_READ);
  DMAMEM_CONSTANT(PROT_WRITE);
  DMAMEM_CONSTANT(PROT_EXEC);
  DMAMEM_CONSTANT(MAP_SHARED);
  DMAMEM_CONSTANT(MAP_PRIVATE);
  DMAMEM_CONSTANT(MAP_FIXED);
  DMAMEM_CONSTANT(MAP_FIXED_NOREPLACE);
  DMAMEM_CONSTANT(MAP_ANONYMOUS);
  DMAMEM_CONSTANT(MAP_POPULATE);
  DMAMEM_CONSTANT(MAP_NORESERVE);
  DMAMEM_CONSTANT(MAP_HUGETLB);
  DMAMEM_CONSTANT(MAP_LOCKED);
  DMAMEM_CONSTANT(MFD_CLOEXEC);
  DMAMEM_CONSTANT(MFD_ALLOW_SEALING);
  DMAMEM_CONSTANT(MFD_HUGETLB);
  DMAMEM_CONSTANT(MFD_HUGE_2MB);
  DMAMEM_CONSTANT(MFD_HUGE_1GB);
  DMAMEM_CONSTANT(F_SEAL_SEAL);
  DMAMEM_CONSTANT(F_SEAL_SHRINK);
  DMAMEM_CONSTANT(F_SEAL_GROW);
  DMAMEM_CONSTANT(F_SEAL_WRITE);
  DMAMEM_CONSTANT(F_SEAL_FUTURE_WRITE);
  DMAMEM_CONSTANT(FALLOC_FL_KEEP_SIZE);
  DMAMEM_CONSTANT(FALLOC_FL_PUNCH_HOLE);
  DMAMEM_CONSTANT(MREMAP_MAYMOVE);
  DMAMEM_CONSTANT(MREMAP_FIXED);
  DMAMEM_CONSTANT(MREMAP_DONTUNMAP);
  DMAMEM_CONSTANT(MADV_NORMAL);
  DMAMEM_CONSTANT(MADV_RANDOM);
  DMAMEM_CONSTANT(MADV_SEQUENTIAL);
  DMAMEM_CONSTANT(MADV_WILLNEED);
  DMAMEM_CONSTANT(MADV_DONTNEED);
  DMAMEM_CONSTANT(MADV_FREE);
  DMAMEM_CONSTANT(MADV_REMOVE);
  DMAMEM_CONSTANT(MADV_DONTFORK);
  DMAMEM_CONSTANT(MADV_DOFORK);
  DMAMEM_CONSTANT(MADV_HUGEPAGE);
  DMAMEM_CONSTANT(MADV_NOHUGEPAGE);
  DMAMEM_CONSTANT(MADV_DONTDUMP);
  DMAMEM_CONSTANT(MADV_DODUMP);
  DMAMEM_CONSTANT(MADV_COLLAPSE);
  DMAMEM_CONSTANT(MADV_POPULATE_READ);
  DMAMEM_CONSTANT(MADV_POPULATE_WRITE);
  DMAMEM_CONSTANT(MLOCK_ONFAULT);
  DMAMEM_CONSTANT(MS_ASYNC);
  DMAMEM_CONSTANT(MS_SYNC);
  DMAMEM_CONSTANT(MS_INVALIDATE);
  DMAMEM_CONSTANT(O_RDONLY);
  DMAMEM_CONSTANT(O_RDWR);
#undef DMAMEM_CONSTANT
  if (!ok || napi_object_freeze(env, c) != napi_ok) return nullptr;
  return c;
}

}  // namespace

bool InitSysinfo(Napi::Env env, Napi::Object exports) {
  napi_value pageSize = nullptr;
  if (napi_create_double(env, static_cast<double>(sysconf(_SC_PAGESIZE)), &pageSize) != napi_ok) return false;
  if (napi_set_named_property(env, exports, "pageSize", pageSize) != napi_ok) return false;
  napi_value constants = Constants(env);
  if (constants == nullptr || napi_set_named_property(env, exports, "constants", constants) != napi_ok) return false;
  if (!Export(env, exports, "memlockLimit", MemlockLimit, "")) return false;
  if (!Export(env, exports, "gettid", Gettid, "")) return false;
  return true;
}

}  // namespace dmamem
