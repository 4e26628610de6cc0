// Physical page information: raw /proc/self/pagemap and /proc/kpageflags entries.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <string>

#include "errors.h"

namespace dmamem {

namespace {

// One pagemap fd per process, never closed: worker threads load the addon too, hence the mutex.
std::mutex pagemap_mutex;
int pagemap_fd = -1;

int CachedPagemapFd() {
  std::lock_guard<std::mutex> lock(pagemap_mutex);
  if (pagemap_fd < 0) pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  return pagemap_fd;  // -1 with errno set; a later call retries
}

// One pread of count 64-bit entries at index first; false with errno set on failure.
bool ReadEntries(int fd, uint64_t first, size_t count, uint64_t* out) {
  size_t want = count * sizeof(uint64_t);
  ssize_t n = pread(fd, out, want, static_cast<off_t>(first * sizeof(uint64_t)));
  if (n < 0) return false;
  if (static_cast<size_t>(n) != want) {
    errno = EIO;  // a short read means entries we cannot report
    return false;
  }
  return true;
}

bool CheckOut(Napi::Env env, const Napi::BigUint64Array& out, uint64_t count, const char* fn) {
  if (out.ElementLength() < count) {
    ThrowRangeError(env, std::string(fn) + ": out holds " + std::to_string(out.ElementLength()) + " entries, " +
                             std::to_string(count) + " needed");
    return false;
  }
  return true;
}

Napi::Value PagemapRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t pages = U64(info[1]);
  Napi::BigUint64Array out = info[2].As<Napi::BigUint64Array>();
  bool reopen = info[3].ToBoolean().Value();
  if (!CheckOut(env, out, pages, "pagemapRead")) return env.Undefined();
  if (pages == 0) return env.Undefined();
  const char* path = "/proc/self/pagemap";
  int fd = reopen ? open(path, O_RDONLY | O_CLOEXEC) : CachedPagemapFd();
  if (fd < 0) {
    ThrowErrno(env, errno, "open", std::string("open(path=\"") + path + "\", flags=" + Hex(O_RDONLY | O_CLOEXEC) + ")");
    return env.Undefined();
  }
  uint64_t first = addr / 4096;
  bool ok = ReadEntries(fd, first, static_cast<size_t>(pages), out.Data());
  int err = errno;
  if (reopen) close(fd);
  if (!ok) {
    ThrowErrno(env, err, "pread",
               "pread(path=\"/proc/self/pagemap\", length=" + std::to_string(pages * 8) +
                   ", offset=" + Hex(first * 8) + ", addr=" + Hex(addr) + ")");
  }
  return env.Undefined();
}

Napi::Value KpageflagsRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t pfn = U64(info[0]);
  uint64_t count = U64(info[1]);
  Napi::BigUint64Array out = info[2].As<Napi::BigUint64Array>();
  if (!CheckOut(env, out, count, "kpageflagsRead")) return env.Undefined();
  if (count == 0) return env.Undefined();
  const char* path = "/proc/kpageflags";
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, errno, "open", std::string("open(path=\"") + path + "\", flags=" + Hex(O_RDONLY | O_CLOEXEC) + ")");
    return env.Undefined();
  }
  bool ok = ReadEntries(fd, pfn, static_cast<size_t>(count), out.Data());
  int err = errno;
  close(fd);
  if (!ok) {
    ThrowErrno(env, err, "pread",
               "pread(path=\"/proc/kpageflags\", length=" + std::to_string(count * 8) + ", offset=" + Hex(pfn * 8) +
                   ", pfn=" + Hex(pfn) + ")");
  }
  return env.Undefined();
}

}  // namespace

bool InitPagemap(Napi::Env env, Napi::Object exports) {
  if (!Export(env, exports, "pagemapRead", PagemapRead, "nngb")) return false;
  if (!Export(env, exports, "kpageflagsRead", KpageflagsRead, "nng")) return false;
  return true;
}

}  // namespace dmamem
