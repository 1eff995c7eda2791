// epoll for reactors: they sleep here on kick fds, their io_uring eventfd and
// their control eventfd once the adaptive polling window has passed.
#include "shim.h"

#include <sys/epoll.h>

namespace vdx {

static Napi::Value EpollCreate(const Napi::CallbackInfo& info) {
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return ThrowErrno(info.Env(), errno, "epoll_create1");
  return Napi::Number::New(info.Env(), fd);
}

// epollCtl(epfd, op, fd, events, token) -> 0 or -errno. token comes back from epollWait.
static Napi::Value EpollCtl(const Napi::CallbackInfo& info) {
  int32_t epfd, op, fd;
  uint32_t events, token;
  if (!ArgInt32(info, 0, &epfd) || !ArgInt32(info, 1, &op) || !ArgInt32(info, 2, &fd) || !ArgUint32(info, 3, &events) ||
      !ArgUint32(info, 4, &token))
    return info.Env().Undefined();
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  int rc = epoll_ctl(epfd, op, fd, &ev);
  return Napi::Number::New(info.Env(), rc < 0 ? -errno : 0);
}

// epollWait(epfd, out: Uint32Array, timeoutMs) -> n or -errno; out holds
// (events, token) pairs, so its length / 2 bounds the events returned.
static Napi::Value EpollWait(const Napi::CallbackInfo& info) {
  int32_t epfd, timeout;
  if (!ArgInt32(info, 0, &epfd) || info.Length() < 2 || !info[1].IsTypedArray() || !ArgInt32(info, 2, &timeout)) {
    if (!info.Env().IsExceptionPending())
      Napi::TypeError::New(info.Env(), "epollWait(epfd, Uint32Array, timeoutMs)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::Uint32Array out = info[1].As<Napi::Uint32Array>();
  constexpr int kMax = 64;
  epoll_event evs[kMax];
  int max = static_cast<int>(out.ElementLength() / 2);
  if (max > kMax) max = kMax;
  if (max < 1) return Napi::Number::New(info.Env(), -EINVAL);
  int n = epoll_wait(epfd, evs, max, timeout);
  if (n < 0) return Napi::Number::New(info.Env(), -errno);
  for (int i = 0; i < n; i++) {
    out[2 * i] = evs[i].events;
    out[2 * i + 1] = static_cast<uint32_t>(evs[i].data.u64);
  }
  return Napi::Number::New(info.Env(), n);
}

void InitEpoll(Napi::Env env, Napi::Object exports) {
  exports.Set("epollCreate", Napi::Function::New(env, EpollCreate, "epollCreate"));
  exports.Set("epollCtl", Napi::Function::New(env, EpollCtl, "epollCtl"));
  exports.Set("epollWait", Napi::Function::New(env, EpollWait, "epollWait"));
  exports.Set("EPOLL_CTL_ADD", Napi::Number::New(env, EPOLL_CTL_ADD));
  exports.Set("EPOLL_CTL_DEL", Napi::Number::New(env, EPOLL_CTL_DEL));
  exports.Set("EPOLL_CTL_MOD", Napi::Number::New(env, EPOLL_CTL_MOD));
  exports.Set("EPOLLIN", Napi::Number::New(env, EPOLLIN));
}

}  // namespace vdx
