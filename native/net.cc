// Stream sockets for network bdevs (the NBD client): non-blocking connect,
// send/recv at host addresses, timerfds for back-off and deadlines. A channel
// drives these from its reactor, so every call here is non-blocking and the
// hot-path ones return -errno instead of throwing. No protocol logic.
#include "shim.h"

#include <arpa/inet.h>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

namespace vdx {

static bool ArgStr(const Napi::CallbackInfo& info, size_t i, std::string* out) {
  if (info.Length() <= i || !info[i].IsString()) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a string").ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  return true;
}

static Napi::Number Num(Napi::Env env, double v) { return Napi::Number::New(env, v); }

// tcpConnect(numericHost, port) -> fd (connect started, non-blocking) or -errno.
// The host must be an IPv4/IPv6 literal (AI_NUMERICHOST): name resolution can
// block, so the main thread resolves names before a reactor ever connects.
// Completion: wait for EPOLLOUT, then soError(fd).
static Napi::Value TcpConnect(const Napi::CallbackInfo& info) {
  std::string host;
  uint32_t port;
  if (!ArgStr(info, 0, &host) || !ArgUint32(info, 1, &port)) return info.Env().Undefined();
  if (port == 0 || port > 65535) return Num(info.Env(), -EINVAL);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  if (getaddrinfo(host.c_str(), service.c_str(), &hints, &res) != 0 || res == nullptr) return Num(info.Env(), -EINVAL);
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    freeaddrinfo(res);
    return Num(info.Env(), -e);
  }
  int rc = connect(fd, res->ai_addr, res->ai_addrlen);
  int e = errno;
  freeaddrinfo(res);
  if (rc < 0 && e != EINPROGRESS) {
    close(fd);
    return Num(info.Env(), -e);
  }
  return Num(info.Env(), fd);
}

// unixConnectNb(path) -> fd (connected or in progress, non-blocking) or -errno.
// socket.cc's unixConnect blocks; a reactor must not.
static Napi::Value UnixConnectNb(const Napi::CallbackInfo& info) {
  std::string path;
  if (!ArgStr(info, 0, &path)) return info.Env().Undefined();
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path) return Num(info.Env(), -ENAMETOOLONG);
  memcpy(sa.sun_path, path.c_str(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Num(info.Env(), -errno);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    return Num(info.Env(), -e);
  }
  return Num(info.Env(), fd);
}

// soError(fd) -> 0 when the connect succeeded, else -errno of SO_ERROR.
static Napi::Value SoError(const Napi::CallbackInfo& info) {
  int32_t fd;
  if (!ArgInt32(info, 0, &fd)) return info.Env().Undefined();
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return Num(info.Env(), -errno);
  return Num(info.Env(), -err);
}

// tcpNodelay(fd) -> 0 or -errno. Requests are small and latency-bound.
static Napi::Value TcpNodelay(const Napi::CallbackInfo& info) {
  int32_t fd;
  if (!ArgInt32(info, 0, &fd)) return info.Env().Undefined();
  int one = 1;
  return Num(info.Env(), setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ? -errno : 0);
}

// recvAt(fd, addr, len) -> bytes (0 = EOF) or -errno; never blocks.
static Napi::Value RecvAt(const Napi::CallbackInfo& info) {
  int32_t fd;
  size_t addr, len;
  if (!ArgInt32(info, 0, &fd) || !ArgSize(info, 1, &addr) || !ArgSize(info, 2, &len)) return info.Env().Undefined();
  ssize_t n = recv(fd, reinterpret_cast<void*>(addr), len, MSG_DONTWAIT);
  return Num(info.Env(), n < 0 ? -errno : static_cast<double>(n));
}

// sendIov(fd, iovAddr, iovcnt) -> bytes or -errno. The iovec array lives at a
// host address (a mapping the caller filled), so a request's header and its
// guest data segments go out in one call without copies; MSG_NOSIGNAL: a
// dead peer is -EPIPE, not a signal.
static Napi::Value SendIov(const Napi::CallbackInfo& info) {
  int32_t fd;
  size_t addr;
  uint32_t cnt;
  if (!ArgInt32(info, 0, &fd) || !ArgSize(info, 1, &addr) || !ArgUint32(info, 2, &cnt)) return info.Env().Undefined();
  if (cnt == 0 || cnt > IOV_MAX) return Num(info.Env(), -EINVAL);
  msghdr m{};
  m.msg_iov = reinterpret_cast<iovec*>(addr);
  m.msg_iovlen = cnt;
  ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  return Num(info.Env(), n < 0 ? -errno : static_cast<double>(n));
}

// sendBuf(fd, u8, offset, length) -> bytes or -errno (handshake messages).
static Napi::Value SendBuf(const Napi::CallbackInfo& info) {
  int32_t fd;
  uint32_t off, len;
  if (!ArgInt32(info, 0, &fd) || info.Length() < 4 || !info[1].IsTypedArray() || !ArgUint32(info, 2, &off) ||
      !ArgUint32(info, 3, &len)) {
    if (!info.Env().IsExceptionPending())
      Napi::TypeError::New(info.Env(), "sendBuf(fd, Uint8Array, offset, length)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  if (static_cast<size_t>(off) + len > buf.ByteLength()) {
    Napi::RangeError::New(info.Env(), "sendBuf: range outside the buffer").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  ssize_t n = send(fd, buf.Data() + off, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  return Num(info.Env(), n < 0 ? -errno : static_cast<double>(n));
}

// timerfdCreate() -> non-blocking CLOCK_MONOTONIC timerfd; throws (setup).
static Napi::Value TimerfdCreate(const Napi::CallbackInfo& info) {
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return ThrowErrno(info.Env(), errno, "timerfd_create");
  return Num(info.Env(), fd);
}

// timerfdSet(fd, delayMs) -> 0 or -errno: one shot after delayMs (> 0); 0 disarms.
static Napi::Value TimerfdSet(const Napi::CallbackInfo& info) {
  int32_t fd;
  if (!ArgInt32(info, 0, &fd) || info.Length() < 2 || !info[1].IsNumber()) {
    if (!info.Env().IsExceptionPending()) Napi::TypeError::New(info.Env(), "timerfdSet(fd, delayMs)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  double ms = info[1].As<Napi::Number>().DoubleValue();
  if (!(ms >= 0) || ms > 1e12) return Num(info.Env(), -EINVAL);
  itimerspec its{};
  if (ms > 0) {
    uint64_t ns = static_cast<uint64_t>(ms * 1e6);
    if (ns == 0) ns = 1;  // 0 would disarm
    its.it_value.tv_sec = static_cast<time_t>(ns / 1000000000u);
    its.it_value.tv_nsec = static_cast<long>(ns % 1000000000u);
  }
  return Num(info.Env(), timerfd_settime(fd, 0, &its, nullptr) < 0 ? -errno : 0);
}

// timerfdRead(fd) -> expirations or -errno (-EAGAIN when it has not fired).
static Napi::Value TimerfdRead(const Napi::CallbackInfo& info) {
  int32_t fd;
  if (!ArgInt32(info, 0, &fd)) return info.Env().Undefined();
  uint64_t v = 0;
  ssize_t n = read(fd, &v, sizeof v);
  if (n < 0) return Num(info.Env(), -errno);
  return Num(info.Env(), n == sizeof v ? static_cast<double>(v) : -EIO);
}

void InitNet(Napi::Env env, Napi::Object exports) {
  exports.Set("tcpConnect", Napi::Function::New(env, TcpConnect, "tcpConnect"));
  exports.Set("unixConnectNb", Napi::Function::New(env, UnixConnectNb, "unixConnectNb"));
  exports.Set("soError", Napi::Function::New(env, SoError, "soError"));
  exports.Set("tcpNodelay", Napi::Function::New(env, TcpNodelay, "tcpNodelay"));
  exports.Set("recvAt", Napi::Function::New(env, RecvAt, "recvAt"));
  exports.Set("sendIov", Napi::Function::New(env, SendIov, "sendIov"));
  exports.Set("sendBuf", Napi::Function::New(env, SendBuf, "sendBuf"));
  exports.Set("timerfdCreate", Napi::Function::New(env, TimerfdCreate, "timerfdCreate"));
  exports.Set("timerfdSet", Napi::Function::New(env, TimerfdSet, "timerfdSet"));
  exports.Set("timerfdRead", Napi::Function::New(env, TimerfdRead, "timerfdRead"));
  exports.Set("EPOLLOUT", Napi::Number::New(env, EPOLLOUT));
  exports.Set("EPOLLERR", Napi::Number::New(env, EPOLLERR));
  exports.Set("EPOLLHUP", Napi::Number::New(env, EPOLLHUP));
  exports.Set("EPOLLRDHUP", Napi::Number::New(env, EPOLLRDHUP));
  exports.Set("IOV_MAX", Napi::Number::New(env, IOV_MAX));
}

}  // namespace vdx
