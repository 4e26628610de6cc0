// Passing descriptors between processes: a Unix-domain socket pair, and sendmsg/recvmsg carrying
// one fd as SCM_RIGHTS ancillary data beside a small payload (what a share handle needs).
#include "errors.h"

#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace dmamem {

namespace {

// socketPair() -> [fd, fd]: AF_UNIX SOCK_SEQPACKET (message boundaries kept), close-on-exec. Give
// one end to a child through spawn's stdio array (Node clears close-on-exec on that copy).
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    ThrowErrno(env, errno, "socketpair", "socketpair(AF_UNIX, SOCK_SEQPACKET)");
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env, 2);
  if (out.IsEmpty()) {
    close(sv[0]);
    close(sv[1]);
    return env.Undefined();
  }
  out.Set(0u, Napi::Number::New(env, sv[0]));
  out.Set(1u, Napi::Number::New(env, sv[1]));
  return out;
}

// sendFd(sock, fd, payload) -> bytes sent: one sendmsg with `fd` as SCM_RIGHTS.
Napi::Value SendFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = I32(info[0]);
  int fd = I32(info[1]);
  Napi::Uint8Array payload = info[2].As<Napi::Uint8Array>();
  iovec iov{payload.Data(), payload.ByteLength()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL);  // a closed peer is EPIPE, not SIGPIPE
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    ThrowErrno(env, errno, "sendmsg", "sendmsg(sock=" + std::to_string(sock) + ", SCM_RIGHTS fd=" + std::to_string(fd) + ")");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Waits until sock is readable for at most timeoutMs (negative: for ever). Returns 0 when it is,
// else an errno (ETIMEDOUT when the time ran out, poll's own errno otherwise).
int WaitReadable(int sock, double timeoutMs) {
  if (timeoutMs < 0) return 0;
  const int64_t deadline = NowMs() + static_cast<int64_t>(timeoutMs);
  for (;;) {
    int64_t left = deadline - NowMs();
    if (left < 0) left = 0;
    pollfd p{sock, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left > INT32_MAX ? INT32_MAX : left));
    if (r > 0) return 0;  // readable, hung up or in error: recvmsg tells which
    if (r == 0 && left <= INT32_MAX) return ETIMEDOUT;
    if (r < 0 && errno != EINTR) return errno;
  }
}

// recvFd(sock, buffer, timeoutMs) -> [bytes, fd]: one recvmsg, after waiting at most timeoutMs for
// a message (negative: blocking); fd is -1 when none came. Received descriptors are close-on-exec;
// any beyond the first are closed (nobody asked for them).
Napi::Value RecvFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = I32(info[0]);
  Napi::Uint8Array buffer = info[1].As<Napi::Uint8Array>();
  double timeoutMs = info[2].As<Napi::Number>().DoubleValue();
  if (int err = WaitReadable(sock, timeoutMs)) {
    ThrowErrno(env, err, err == ETIMEDOUT ? "recvmsg" : "poll",
               "waiting " + std::to_string(static_cast<int64_t>(timeoutMs)) + " ms for a share on socket " + std::to_string(sock));
    return env.Undefined();
  }
  iovec iov{buffer.Data(), buffer.ByteLength()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  // After a wait, never block: another reader of the socket may have taken the message.
  const int flags = MSG_CMSG_CLOEXEC | (timeoutMs < 0 ? 0 : MSG_DONTWAIT);
  do n = recvmsg(sock, &msg, flags);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    ThrowErrno(env, errno, "recvmsg", "recvmsg(sock=" + std::to_string(sock) + ")");
    return env.Undefined();
  }
  int fd = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int got;
      std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (fd == -1) fd = got;
      else close(got);
    }
  }
  Napi::Array out = Napi::Array::New(env, 2);
  if (out.IsEmpty()) {
    if (fd != -1) close(fd);
    return env.Undefined();
  }
  out.Set(0u, Napi::Number::New(env, static_cast<double>(n)));
  out.Set(1u, Napi::Number::New(env, fd));
  return out;
}

}  // namespace

bool InitIpc(Napi::Env env, Napi::Object exports) {
  return Export(env, exports, "socketPair", SocketPair, "") && Export(env, exports, "sendFd", SendFd, "nnu") && Export(env, exports, "recvFd", RecvFd, "nun");
}

}  // namespace dmamem
