// Per-environment release of mappings and fds at teardown. No JS runs when a worker is terminated,
// so a Region or Machine the worker never closed would otherwise stay mapped (and its memfd open)
// for the life of the process. The wrappers keep this record exactly: a range is added by mmap,
// reserve and mremap, and removed by munmap and mremap; an fd is added by memfd_create, open and dup,
// and removed by close. Mappings are process-wide, so the record only ever holds what this
// environment made itself.
#include "teardown.h"

#include "errors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <set>

namespace dmamem {

namespace {

struct EnvResources {
  std::map<uint64_t, uint64_t> ranges;  // start -> end: disjoint, touching ranges merged
  std::set<int> fds;
  EnvStatus status;

  // Runs when the environment is torn down (the instance data's finalizer).
  ~EnvResources() {
    for (const auto& [start, end] : ranges) munmap(reinterpret_cast<void*>(start), end - start);
    for (int fd : fds) close(fd);
  }

  void Add(uint64_t a, uint64_t e) {
    auto it = ranges.upper_bound(a);
    if (it != ranges.begin()) {
      auto prev = std::prev(it);
      if (prev->second >= a) {
        a = prev->first;
        e = std::max(e, prev->second);
        it = ranges.erase(prev);
      }
    }
    while (it != ranges.end() && it->first <= e) {
      e = std::max(e, it->second);
      it = ranges.erase(it);
    }
    ranges[a] = e;
  }

  void Remove(uint64_t a, uint64_t e) {
    auto it = ranges.upper_bound(a);
    if (it != ranges.begin()) --it;
    while (it != ranges.end() && it->first < e) {
      const uint64_t start = it->first;
      const uint64_t end = it->second;
      if (end <= a) {
        ++it;
        continue;
      }
      it = ranges.erase(it);
      if (start < a) ranges[start] = a;
      if (end > e) {
        ranges[e] = end;
        break;
      }
    }
  }
};

EnvResources* Resources(napi_env env) {
  void* data = nullptr;
  if (napi_get_instance_data(env, &data) != napi_ok) return nullptr;
  return static_cast<EnvResources*>(data);
}

// For tests: what this environment holds now.
Napi::Value TrackedResources(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  EnvResources* r = Resources(env);
  double bytes = 0;
  if (r != nullptr) {
    for (const auto& [start, end] : r->ranges) bytes += static_cast<double>(end - start);
  }
  SetQuiet(env, out, "ranges", Napi::Number::New(env, r == nullptr ? 0 : static_cast<double>(r->ranges.size())));
  SetQuiet(env, out, "bytes", Napi::Number::New(env, bytes));
  SetQuiet(env, out, "fds", Napi::Number::New(env, r == nullptr ? 0 : static_cast<double>(r->fds.size())));
  return out;
}

}  // namespace

void TrackRange(napi_env env, uint64_t addr, uint64_t length) {
  if (EnvResources* r = Resources(env); r != nullptr && length > 0) r->Add(addr, addr + length);
}

void UntrackRange(napi_env env, uint64_t addr, uint64_t length) {
  if (EnvResources* r = Resources(env); r != nullptr && length > 0) r->Remove(addr, addr + length);
}

EnvStatus* Status(napi_env env) {
  EnvResources* r = Resources(env);
  return r == nullptr ? nullptr : &r->status;
}

void Halt(napi_env env) {
  if (EnvStatus* st = Status(env); st != nullptr) st->halted = true;
}

void TrackFd(napi_env env, int fd) {
  if (EnvResources* r = Resources(env); r != nullptr) r->fds.insert(fd);
}

void UntrackFd(napi_env env, int fd) {
  if (EnvResources* r = Resources(env); r != nullptr) r->fds.erase(fd);
}

bool InitTeardown(Napi::Env env, Napi::Object exports) {
  auto* resources = new EnvResources();
  auto finalize = [](napi_env, void* data, void*) { delete static_cast<EnvResources*>(data); };
  if (napi_set_instance_data(env, resources, finalize, nullptr) != napi_ok) {
    delete resources;
    return false;
  }
  if (!Export(env, exports, "trackedResources", TrackedResources, "")) return false;
  return true;
}

}  // namespace dmamem
