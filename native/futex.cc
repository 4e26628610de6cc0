// Shared futexes on mapped memory: a blocking wait, an asynchronous wait settled on the JS thread,
// cancelling an asynchronous wait, and wake. Shared (no FUTEX_PRIVATE_FLAG): the kernel keys a
// MAP_SHARED memfd word by its inode and offset, so waiters and wakers may live in other processes.
#include "errors.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

namespace dmamem {

namespace {

// Results, as the JS side maps them: 'ok', 'not-equal', 'timed-out', and (async only) cancelled.
enum Result : int { kOk = 0, kNotEqual = 1, kTimedOut = 2, kCancelled = 3, kTerminating = 4 };

// A blocking wait sleeps in slices this long so that a worker being terminated (no signal reaches
// a thread asleep in the kernel) notices and returns instead of keeping its thread for ever.
constexpr int64_t kSliceNs = 50 * 1000 * 1000;

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

timespec ToTimespec(int64_t ns) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1000000000);
  ts.tv_nsec = static_cast<long>(ns % 1000000000);
  return ts;
}

long FutexWait(uint32_t* addr, uint32_t expected, const timespec* relative) {
  return syscall(SYS_futex, addr, FUTEX_WAIT, expected, relative, nullptr, 0);
}

// One pending waitAsync. Owned by the environment's table; freed on the JS thread only.
struct Waiter {
  uint32_t id;
  uint32_t* addr;
  uint32_t expected;
  int64_t deadline;  // CLOCK_MONOTONIC ns; -1 = none
  // Private futex word: set to 1 and woken to cancel (AbortSignal, close(), teardown).
  std::atomic<uint32_t> cancel{0};
  napi_deferred deferred = nullptr;
  int result = kOk;
  int err = 0;
};

// Waits on the shared word and the private cancel word at once (futex_waitv): a cancel that lands
// before the wait starts is seen at entry (its value is no longer 0), so none is lost.
void RunWaiter(Waiter* w) {
  bool first = true;
  for (;;) {
    futex_waitv v[2] = {};
    v[0].val = w->expected;
    v[0].uaddr = reinterpret_cast<uintptr_t>(w->addr);
    v[0].flags = FUTEX_32;
    v[1].val = 0;
    v[1].uaddr = reinterpret_cast<uintptr_t>(&w->cancel);
    v[1].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
    timespec abs;
    if (w->deadline >= 0) abs = ToTimespec(w->deadline);
    long rc = syscall(SYS_futex_waitv, v, 2, 0, w->deadline >= 0 ? &abs : nullptr, CLOCK_MONOTONIC);
    if (w->cancel.load() != 0) {
      w->result = kCancelled;
      return;
    }
    if (rc == 0) {
      w->result = kOk;
      return;
    }
    if (rc > 0) continue;  // the cancel word was woken but not set: cannot happen; wait again
    int e = errno;
    if (e == EAGAIN) {
      // On a retry after EINTR the word changed while we were waiting: a wake we may have missed.
      w->result = first ? kNotEqual : kOk;
      return;
    }
    if (e == ETIMEDOUT) {
      w->result = kTimedOut;
      return;
    }
    if (e != EINTR) {
      w->result = -1;
      w->err = e;
      return;
    }
    first = false;
  }
}

// Per-environment state: the pending waiters (JS thread only), a pool of waiter threads fed from a
// queue, and the thread-safe function that settles promises on the JS thread.
struct FutexEnv {
  napi_env env = nullptr;
  napi_threadsafe_function tsfn = nullptr;
  napi_ref noop = nullptr;
  std::unordered_map<uint32_t, Waiter*> pending;  // JS thread only
  uint32_t nextId = 1;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Waiter*> queue;
  std::vector<std::thread> threads;
  int idle = 0;
  bool shutdown = false;

  void Submit(Waiter* w) {
    std::lock_guard<std::mutex> lock(mu);
    queue.push_back(w);
    // An idle thread takes one job; jobs beyond the idle threads each need a thread of their own
    // (a waiter sleeps in the kernel until its word is woken: it cannot serve the queue meanwhile).
    if (queue.size() <= static_cast<size_t>(idle)) {
      cv.notify_one();
      return;
    }
    threads.emplace_back([this] { Loop(); });
  }

  void Loop() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      idle++;
      cv.wait(lock, [this] { return shutdown || !queue.empty(); });
      idle--;
      if (queue.empty()) return;  // shutdown
      Waiter* w = queue.front();
      queue.pop_front();
      lock.unlock();
      RunWaiter(w);
      // Nonblocking: the queue is unbounded. Fails only once the environment is closing; the
      // waiter then stays in `pending` and teardown frees it.
      napi_call_threadsafe_function(tsfn, w, napi_tsfn_nonblocking);
      lock.lock();
    }
  }

  // Runs at environment teardown, before the thread-safe function's own cleanup (registered after
  // it, and hooks run in reverse order): wakes every waiter, joins every thread, frees the table.
  static void Cleanup(void* arg) {
    auto* fe = static_cast<FutexEnv*>(arg);
    for (auto& [id, w] : fe->pending) {
      w->cancel.store(1);
      syscall(SYS_futex, &w->cancel, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT_MAX, nullptr, nullptr, 0);
    }
    {
      std::lock_guard<std::mutex> lock(fe->mu);
      fe->shutdown = true;
    }
    fe->cv.notify_all();
    for (auto& t : fe->threads) t.join();
    for (auto& [id, w] : fe->pending) delete w;
    fe->pending.clear();
    // The thread-safe function may still hold queued pointers: its teardown passes them to
    // CallJs with env == nullptr, which touches nothing. `fe` itself is kept by the tsfn's finalizer.
    fe->queue.clear();
    fe->threads.clear();
    fe->env = nullptr;
  }
};

const char* ResultName(int r) {
  switch (r) {
    case kOk: return "ok";
    case kNotEqual: return "not-equal";
    case kTimedOut: return "timed-out";
    default: return "cancelled";
  }
}

void CallJs(napi_env env, napi_value, void* context, void* data) {
  if (env == nullptr) return;  // closing: the waiter is freed by Cleanup (or already was)
  auto* fe = static_cast<FutexEnv*>(context);
  auto* w = static_cast<Waiter*>(data);
  if (fe->env == nullptr) return;
  auto it = fe->pending.find(w->id);
  if (it == fe->pending.end() || it->second != w) return;
  fe->pending.erase(it);
  if (fe->pending.empty()) napi_unref_threadsafe_function(env, fe->tsfn);
  napi_value value = nullptr;
  if (w->result < 0) {
    value = ErrnoError(env, w->err, "futex_waitv", "futex_waitv(addr=" + Hex(reinterpret_cast<uintptr_t>(w->addr)) + ")");
    if (value != nullptr) napi_reject_deferred(env, w->deferred, value);
  } else if (napi_create_string_utf8(env, ResultName(w->result), NAPI_AUTO_LENGTH, &value) == napi_ok) {
    napi_resolve_deferred(env, w->deferred, value);
  }
  delete w;
}

FutexEnv* Data(const Napi::CallbackInfo& info) { return static_cast<FutexEnv*>(info.Data()); }

// True when the environment can no longer run JS (a worker being terminated): calling a native
// no-op through Node-API fails then (napi_pending_exception) without running anything.
bool Terminating(napi_env env, FutexEnv* fe) {
  napi_value fn = nullptr, global = nullptr, out = nullptr;
  if (napi_get_reference_value(env, fe->noop, &fn) != napi_ok || fn == nullptr) return true;
  if (napi_get_global(env, &global) != napi_ok) return true;
  return napi_call_function(env, global, fn, 0, nullptr, &out) != napi_ok;
}

Napi::Value Noop(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

// futexWait(addr, expected, timeoutNs) -> 0 ok | 1 not-equal | 2 timed-out; timeoutNs < 0: none.
// Returns undefined (having thrown nothing) when the worker is being terminated.
Napi::Value Wait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* addr = static_cast<uint32_t*>(Ptr(info[0]));
  uint32_t expected = static_cast<uint32_t>(I64(info[1]));
  int64_t timeout = I64(info[2]);
  const int64_t deadline = timeout < 0 ? -1 : MonotonicNs() + timeout;
  bool first = true;
  for (;;) {
    int64_t slice = kSliceNs;
    if (deadline >= 0) {
      int64_t left = deadline - MonotonicNs();
      // The first call compares the word even with no time left ('not-equal' beats 'timed-out').
      if (left <= 0 && !first) return Napi::Number::New(env, kTimedOut);
      if (left < slice) slice = left < 0 ? 0 : left;
    }
    timespec rel = ToTimespec(slice);
    long rc = FutexWait(addr, expected, &rel);
    if (rc == 0) return Napi::Number::New(env, kOk);
    int e = errno;
    // After a slice, a changed word means a wake landed between two slices: report it as woken.
    if (e == EAGAIN) return Napi::Number::New(env, first ? kNotEqual : kOk);
    if (e != ETIMEDOUT && e != EINTR) {
      ThrowErrno(env, e, "futex", "futex(addr=" + Hex(reinterpret_cast<uintptr_t>(addr)) + ", FUTEX_WAIT)");
      return env.Undefined();
    }
    first = false;
    if (Terminating(env, Data(info))) return env.Undefined();
  }
}

// futexWake(addr, count) -> how many waiters were woken (in any process).
Napi::Value Wake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* addr = static_cast<uint32_t*>(Ptr(info[0]));
  int64_t count = I64(info[1]);
  int n = count > INT_MAX ? INT_MAX : static_cast<int>(count);
  long rc = syscall(SYS_futex, addr, FUTEX_WAKE, n, nullptr, nullptr, 0);
  if (rc < 0) {
    ThrowErrno(env, errno, "futex", "futex(addr=" + Hex(reinterpret_cast<uintptr_t>(addr)) + ", FUTEX_WAKE)");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(rc));
}

// futexWaitAsync(addr, expected, timeoutNs) -> [id, promise of 'ok'|'not-equal'|'timed-out'|'cancelled'].
Napi::Value WaitAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FutexEnv* fe = Data(info);
  auto* w = new Waiter();
  w->addr = static_cast<uint32_t*>(Ptr(info[0]));
  w->expected = static_cast<uint32_t>(I64(info[1]));
  int64_t timeout = I64(info[2]);
  w->deadline = timeout < 0 ? -1 : MonotonicNs() + timeout;
  napi_value promise = nullptr;
  if (Failed(env, napi_create_promise(env, &w->deferred, &promise))) {
    delete w;
    return env.Undefined();
  }
  napi_value out = nullptr, id = nullptr;
  w->id = fe->nextId++;
  if (fe->nextId == 0) fe->nextId = 1;
  if (Failed(env, napi_create_array_with_length(env, 2, &out)) || Failed(env, napi_create_uint32(env, w->id, &id)) ||
      Failed(env, napi_set_element(env, out, 0, id)) || Failed(env, napi_set_element(env, out, 1, promise))) {
    delete w;  // the promise is never settled; nothing refers to it
    return env.Undefined();
  }
  if (fe->pending.empty()) napi_ref_threadsafe_function(env, fe->tsfn);
  fe->pending[w->id] = w;
  fe->Submit(w);
  return Napi::Value(env, out);
}

// futexCancel(id) -> true if that wait was pending (it settles with 'cancelled' shortly).
Napi::Value Cancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FutexEnv* fe = Data(info);
  auto it = fe->pending.find(static_cast<uint32_t>(I64(info[0])));
  if (it == fe->pending.end()) return Napi::Boolean::New(env, false);
  Waiter* w = it->second;
  w->cancel.store(1);
  syscall(SYS_futex, &w->cancel, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT_MAX, nullptr, nullptr, 0);
  return Napi::Boolean::New(env, true);
}

// For tests: waits pending in this environment, and waiter threads it has started.
Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FutexEnv* fe = Data(info);
  Napi::Object out = Napi::Object::New(env);
  size_t threads;
  {
    std::lock_guard<std::mutex> lock(fe->mu);
    threads = fe->threads.size();
  }
  SetQuiet(env, out, "pending", Napi::Number::New(env, static_cast<double>(fe->pending.size())));
  SetQuiet(env, out, "threads", Napi::Number::New(env, static_cast<double>(threads)));
  return out;
}

}  // namespace

bool InitFutex(Napi::Env env, Napi::Object exports) {
  auto* fe = new FutexEnv();
  fe->env = env;
  napi_value name = nullptr;
  if (napi_create_string_utf8(env, "dmamem futex", NAPI_AUTO_LENGTH, &name) != napi_ok) {
    delete fe;
    return false;
  }
  // The finalizer frees `fe` once the tsfn is gone (Cleanup has emptied it by then).
  auto finalize = [](napi_env, void* data, void*) { delete static_cast<FutexEnv*>(data); };
  if (napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, fe, finalize, fe, CallJs, &fe->tsfn) != napi_ok) {
    delete fe;
    return false;
  }
  // Not keeping the process alive until a wait is pending (then it does, like a timer).
  napi_unref_threadsafe_function(env, fe->tsfn);
  // After the tsfn: cleanup hooks run in reverse order, so this one runs while the tsfn still exists.
  if (napi_add_env_cleanup_hook(env, FutexEnv::Cleanup, fe) != napi_ok) return false;
  Napi::Function noop = Napi::Function::New(env, Noop, "noop");
  if (noop.IsEmpty() || napi_create_reference(env, noop, 1, &fe->noop) != napi_ok) return false;
  return Export(env, exports, "futexWait", Wait, "ann", fe) && Export(env, exports, "futexWake", Wake, "an", fe) &&
         Export(env, exports, "futexWaitAsync", WaitAsync, "ann", fe) && Export(env, exports, "futexCancel", Cancel, "n", fe) &&
         Export(env, exports, "futexStats", Stats, "", fe);
}

}  // namespace dmamem
