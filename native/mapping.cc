// Address-space mappings: mmap, aligned reservations, batched MAP_FIXED, mremap, munmap, mprotect.
// None of these report to napi_adjust_external_memory: the TypeScript layer owns that accounting.
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <cstddef>
#include <string>

#include "errors.h"
#include "teardown.h"

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

namespace dmamem {

namespace {

std::string MmapCall(uint64_t addr, uint64_t length, int prot, int flags, int fd, uint64_t offset) {
  return "mmap(addr=" + Hex(addr) + ", length=" + std::to_string(length) + ", prot=" + Hex(static_cast<unsigned>(prot)) +
         ", flags=" + Hex(static_cast<unsigned>(flags)) + ", fd=" + std::to_string(fd) + ", offset=" + Hex(offset) + ")";
}

// Mappings cover whole pages; the record does too.
uint64_t PageAlign(uint64_t length) {
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return (length + page - 1) & ~(page - 1);
}

std::string RangeCall(const char* name, uint64_t addr, uint64_t length) {
  return std::string(name) + "(addr=" + Hex(addr) + ", length=" + std::to_string(length) + ")";
}

Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t length = U64(info[1]);
  int prot = I32(info[2]);
  int flags = I32(info[3]);
  int fd = I32(info[4]);
  uint64_t offset = U64(info[5]);
  void* p = mmap(reinterpret_cast<void*>(addr), length, prot, flags, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap", MmapCall(addr, length, prot, flags, fd, offset));
    return env.Undefined();
  }
  TrackRange(env, reinterpret_cast<uint64_t>(p), PageAlign(length));
  return Num(env, p);
}

// Reservations are PROT_NONE private mappings of one empty memfd named "dmamem:reserved" rather
// than anonymous memory, so /proc/self/maps shows which ranges are ours (this kernel has no
// CONFIG_ANON_VMA_NAME). Nothing can touch them, so the file being empty does not matter.
int ReservationFd() {
  static int fd = -1;
  static std::once_flag once;
  std::call_once(once, [] { fd = static_cast<int>(syscall(SYS_memfd_create, "dmamem:reserved", MFD_CLOEXEC)); });
  return fd;
}

void* MapReservation(void* addr, uint64_t length, int extraFlags) {
  int fd = ReservationFd();
  if (fd < 0) return mmap(addr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | extraFlags, -1, 0);
  return mmap(addr, length, PROT_NONE, MAP_PRIVATE | MAP_NORESERVE | extraFlags, fd, 0);
}

Napi::Value Reserve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t length = U64(info[0]);
  uint64_t align = U64(info[1]);
  const int prot = PROT_NONE;
  const int flags = MAP_PRIVATE | MAP_NORESERVE;
  // The kernel only promises page alignment, so over-reserve by `align` and trim both ends.
  uint64_t total = length + align;
  void* p = MapReservation(nullptr, total, 0);
  if (p == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap", MmapCall(0, total, prot, flags, ReservationFd(), 0));
    return env.Undefined();
  }
  uintptr_t base = reinterpret_cast<uintptr_t>(p);
  uintptr_t aligned = (base + align - 1) & ~static_cast<uintptr_t>(align - 1);
  uintptr_t head = aligned - base;
  uintptr_t tail = (base + total) - (aligned + length);
  if (head != 0 && munmap(p, head) != 0) {
    int err = errno;
    munmap(p, total);
    ThrowErrno(env, err, "munmap", RangeCall("munmap", base, head));
    return env.Undefined();
  }
  if (tail != 0 && munmap(reinterpret_cast<void*>(aligned + length), tail) != 0) {
    int err = errno;
    munmap(reinterpret_cast<void*>(aligned), length + tail);
    ThrowErrno(env, err, "munmap", RangeCall("munmap", aligned + length, tail));
    return env.Undefined();
  }
  TrackRange(env, aligned, length);
  return Num(env, aligned);
}

// Turns [addr, addr+length) back into a reservation (one MAP_FIXED call), dropping what was mapped.
Napi::Value ReserveFixed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t length = U64(info[1]);
  if (MapReservation(reinterpret_cast<void*>(addr), length, MAP_FIXED) == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap", MmapCall(addr, length, PROT_NONE, MAP_PRIVATE | MAP_NORESERVE | MAP_FIXED, ReservationFd(), 0));
    return env.Undefined();
  }
  TrackRange(env, addr, PageAlign(length));
  return env.Undefined();
}

Napi::Value MapFixedBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = I32(info[0]);
  int prot = I32(info[1]);
  int flags = I32(info[2]) | MAP_FIXED;
  Napi::Float64Array batch = info[3].As<Napi::Float64Array>();
  const double* t = batch.Data();
  size_t n = batch.ElementLength() / 3;
  // One crossing into native code for many mappings; on failure the caller unwinds [0, index).
  for (size_t i = 0; i < n; i++) {
    uint64_t addr = static_cast<uint64_t>(t[3 * i]);
    uint64_t length = static_cast<uint64_t>(t[3 * i + 1]);
    uint64_t offset = static_cast<uint64_t>(t[3 * i + 2]);
    void* p = mmap(reinterpret_cast<void*>(addr), length, prot, flags, fd, static_cast<off_t>(offset));
    if (p == MAP_FAILED) {
      napi_value e = ErrnoError(env, errno, "mmap", MmapCall(addr, length, prot, flags, fd, offset));
      SetQuiet(env, e, "index", Napi::Number::New(env, static_cast<double>(i)));
      Throw(env, e);
      return env.Undefined();
    }
    TrackRange(env, addr, PageAlign(length));
  }
  return env.Undefined();
}

Napi::Value Mremap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t old_addr = U64(info[0]);
  uint64_t old_length = U64(info[1]);
  uint64_t new_length = U64(info[2]);
  int flags = I32(info[3]);
  uint64_t new_addr = U64(info[4]);
  void* p = mremap(reinterpret_cast<void*>(old_addr), old_length, new_length, flags, reinterpret_cast<void*>(new_addr));
  if (p == MAP_FAILED) {
    ThrowErrno(env, errno, "mremap",
               "mremap(oldAddr=" + Hex(old_addr) + ", oldLength=" + std::to_string(old_length) +
                   ", newLength=" + std::to_string(new_length) + ", flags=" + Hex(static_cast<unsigned>(flags)) +
                   ", newAddr=" + Hex(new_addr) + ")");
    return env.Undefined();
  }
  if (!(flags & MREMAP_DONTUNMAP)) UntrackRange(env, old_addr, PageAlign(old_length));
  TrackRange(env, reinterpret_cast<uint64_t>(p), PageAlign(new_length));
  return Num(env, p);
}

Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t length = U64(info[1]);
  if (munmap(reinterpret_cast<void*>(addr), length) != 0) {
    ThrowErrno(env, errno, "munmap", RangeCall("munmap", addr, length));
    return env.Undefined();
  }
  UntrackRange(env, addr, PageAlign(length));
  return env.Undefined();
}

Napi::Value Mprotect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t addr = U64(info[0]);
  uint64_t length = U64(info[1]);
  int prot = I32(info[2]);
  if (mprotect(reinterpret_cast<void*>(addr), length, prot) != 0) {
    ThrowErrno(env, errno, "mprotect",
               "mprotect(addr=" + Hex(addr) + ", length=" + std::to_string(length) +
                   ", prot=" + Hex(static_cast<unsigned>(prot)) + ")");
  }
  return env.Undefined();
}

}  // namespace

bool InitMapping(Napi::Env env, Napi::Object exports) {
  if (!Export(env, exports, "mmap", Mmap, "nnnnnn")) return false;
  if (!Export(env, exports, "reserve", Reserve, "nn")) return false;
  if (!Export(env, exports, "reserveFixed", ReserveFixed, "an")) return false;
  if (!Export(env, exports, "mapFixedBatch", MapFixedBatch, "nnnf")) return false;
  if (!Export(env, exports, "mremap", Mremap, "annnn")) return false;
  if (!Export(env, exports, "munmap", Munmap, "an")) return false;
  if (!Export(env, exports, "mprotect", Mprotect, "ann")) return false;
  return true;
}

}  // namespace dmamem
