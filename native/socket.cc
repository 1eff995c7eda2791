// Unix stream sockets with SCM_RIGHTS fd passing, and fd readiness on the Node
// event loop (uv_poll) for the control plane. No protocol logic here.
#include "shim.h"

#include <cstring>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

namespace vdx {

static constexpr int kMaxFds = 16;  // vhost-user sends at most 8; anything beyond is closed

static bool FillAddr(Napi::Env env, const std::string& path, sockaddr_un* sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa->sun_path) {
    ThrowErrno(env, ENAMETOOLONG, "bind");
    return false;
  }
  memcpy(sa->sun_path, path.c_str(), path.size());
  return true;
}

static bool ArgString(const Napi::CallbackInfo& info, size_t i, std::string* out) {
  if (info.Length() <= i || !info[i].IsString()) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a string").ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  return true;
}

// unixListen(path, backlog) -> non-blocking listening fd. The caller removes a
// stale socket file first and sets the mode afterwards.
static Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  std::string path;
  int32_t backlog;
  if (!ArgString(info, 0, &path) || !ArgInt32(info, 1, &backlog)) return info.Env().Undefined();
  sockaddr_un sa;
  if (!FillAddr(info.Env(), path, &sa)) return info.Env().Undefined();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(info.Env(), errno, "socket");
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(info.Env(), e, "bind");
  }
  if (listen(fd, backlog) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(info.Env(), e, "listen");
  }
  return Napi::Number::New(info.Env(), fd);
}

// unixConnect(path) -> blocking connected fd (clients in tests and tools).
static Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  std::string path;
  if (!ArgString(info, 0, &path)) return info.Env().Undefined();
  sockaddr_un sa;
  if (!FillAddr(info.Env(), path, &sa)) return info.Env().Undefined();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(info.Env(), errno, "socket");
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(info.Env(), e, "connect");
  }
  return Napi::Number::New(info.Env(), fd);
}

// socketpair() -> [fd, fd] (AF_UNIX stream, cloexec); for loopback tests.
static Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return ThrowErrno(info.Env(), errno, "socketpair");
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, Napi::Number::New(info.Env(), sv[0]));
  a.Set(1u, Napi::Number::New(info.Env(), sv[1]));
  return a;
}

// accept(fd) -> non-blocking connected fd, or -errno (-EAGAIN when none is pending).
static Napi::Value Accept(const Napi::CallbackInfo& info) {
  int32_t fd;
  if (!ArgInt32(info, 0, &fd)) return info.Env().Undefined();
  int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  return Napi::Number::New(info.Env(), c < 0 ? -errno : c);
}

// setNonblocking(fd, on) -> 0 or -errno
static Napi::Value SetNonblocking(const Napi::CallbackInfo& info) {
  int32_t fd;
  if (!ArgInt32(info, 0, &fd)) return info.Env().Undefined();
  bool on = info.Length() > 1 && info[1].ToBoolean();
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return Napi::Number::New(info.Env(), -errno);
  fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  return Napi::Number::New(info.Env(), fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0);
}

// (fd, Uint8Array, offset, length, <fds>) -> fd and the iovec over [offset, offset+length).
static bool ArgMsg(const Napi::CallbackInfo& info, const char* usage, bool fdsOk, int32_t* fd, iovec* iov) {
  uint32_t off, len;
  if (info.Length() < 5 || !ArgInt32(info, 0, fd) || !info[1].IsTypedArray() || !ArgUint32(info, 2, &off) ||
      !ArgUint32(info, 3, &len) || !fdsOk) {
    if (!info.Env().IsExceptionPending()) Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
    return false;
  }
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  if (static_cast<size_t>(off) + len > buf.ByteLength()) {
    Napi::RangeError::New(info.Env(), std::string(usage) + ": range outside the buffer").ThrowAsJavaScriptException();
    return false;
  }
  *iov = iovec{buf.Data() + off, len};
  return true;
}

// recvMsg(fd, u8, offset, length, fdsOut: Int32Array) -> bytes | -errno.
// Received fds are stored in fdsOut[1..], their count in fdsOut[0]; fds beyond
// fdsOut's room are closed, and fdsOut[0] counts them too so the caller can
// reject the message. MSG_CTRUNC (more fds than kMaxFds) is reported as -EMSGSIZE
// after closing what did arrive.
static Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  int32_t fd;
  iovec iov;
  if (!ArgMsg(info, "recvMsg(fd, Uint8Array, offset, length, Int32Array)", info[4].IsTypedArray(), &fd, &iov))
    return info.Env().Undefined();
  Napi::Int32Array fdsOut = info[4].As<Napi::Int32Array>();
  if (fdsOut.ElementLength() < 1) {
    Napi::RangeError::New(info.Env(), "recvMsg: fdsOut needs room for the count").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctrl;
  m.msg_controllen = sizeof ctrl;
  ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) return Napi::Number::New(info.Env(), -errno);
  size_t room = fdsOut.ElementLength() - 1, count = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int* p = reinterpret_cast<int*>(CMSG_DATA(c));
    for (size_t i = 0; i < k; i++, count++) {
      if (count < room) fdsOut[count + 1] = p[i];
      else close(p[i]);
    }
  }
  fdsOut[0] = static_cast<int32_t>(count);
  if (m.msg_flags & MSG_CTRUNC) {
    for (size_t i = 0; i < count && i < room; i++) close(fdsOut[i + 1]);
    fdsOut[0] = 0;
    return Napi::Number::New(info.Env(), -EMSGSIZE);
  }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

// sendMsg(fd, u8, offset, length, fds: number[]) -> bytes | -errno
static Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  int32_t fd;
  iovec iov;
  if (!ArgMsg(info, "sendMsg(fd, Uint8Array, offset, length, number[])", info[4].IsArray(), &fd, &iov))
    return info.Env().Undefined();
  Napi::Array fds = info[4].As<Napi::Array>();
  if (fds.Length() > kMaxFds) {
    Napi::RangeError::New(info.Env(), "sendMsg: too many fds").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (fds.Length() > 0) {
    m.msg_control = ctrl;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.Length());
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.Length());
    int* p = reinterpret_cast<int*>(CMSG_DATA(c));
    for (uint32_t i = 0; i < fds.Length(); i++) p[i] = fds.Get(i).As<Napi::Number>().Int32Value();
  }
  ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
  return Napi::Number::New(info.Env(), n < 0 ? -errno : static_cast<double>(n));
}

// FdWatcher: readiness of one fd on the Node event loop (control plane only).
class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {InstanceMethod("start", &FdWatcher::Start), InstanceMethod("stop", &FdWatcher::Stop),
                        InstanceMethod("close", &FdWatcher::CloseJs)});
  }

  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    int32_t fd;
    if (!ArgInt32(info, 0, &fd)) return;
    env_ = info.Env();
    handle_ = new uv_poll_t;
    handle_->data = this;
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    int rc = uv_poll_init(loop, handle_, fd);
    if (rc < 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowErrno(env_, -rc, "uv_poll_init");
    }
  }

  ~FdWatcher() override { Close(); }

 private:
  // start(readable, writable, cb(status, readable, writable))
  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (!handle_) return ThrowErrno(info.Env(), EBADF, "uv_poll_start");
    if (info.Length() < 3 || !info[2].IsFunction()) {
      Napi::TypeError::New(info.Env(), "start(readable, writable, callback)").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    int events = (info[0].ToBoolean() ? UV_READABLE : 0) | (info[1].ToBoolean() ? UV_WRITABLE : 0);
    cb_ = Napi::Persistent(info[2].As<Napi::Function>());
    if (!active_) Ref();  // keep the JS object alive while the loop may call it
    active_ = true;
    int rc = uv_poll_start(handle_, events, OnPoll);
    if (rc < 0) return ThrowErrno(info.Env(), -rc, "uv_poll_start");
    return info.Env().Undefined();
  }

  // stop(): no more callbacks until start() again.
  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_) uv_poll_stop(handle_);
    if (active_) {
      active_ = false;
      Unref();
    }
    return info.Env().Undefined();
  }

  // close(): stop for good and release the handle (the fd itself stays open).
  Napi::Value CloseJs(const Napi::CallbackInfo& info) {
    Close();
    return info.Env().Undefined();
  }

  void Close() {
    if (active_) {
      active_ = false;
      Unref();
    }
    if (handle_) {
      uv_poll_stop(handle_);
      handle_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      handle_ = nullptr;
    }
    cb_.Reset();
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<FdWatcher*>(h->data);
    if (!self || self->cb_.IsEmpty()) return;
    Napi::HandleScope scope(self->env_);
    Napi::Env env = self->env_;
    self->cb_.MakeCallback(env.Global(), {Napi::Number::New(env, status), Napi::Boolean::New(env, events & UV_READABLE),
                                          Napi::Boolean::New(env, events & UV_WRITABLE)});
  }

  Napi::Env env_{nullptr};
  uv_poll_t* handle_ = nullptr;
  Napi::FunctionReference cb_;
  bool active_ = false;
};

void InitSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("accept", Napi::Function::New(env, Accept, "accept"));
  exports.Set("setNonblocking", Napi::Function::New(env, SetNonblocking, "setNonblocking"));
  exports.Set("recvMsg", Napi::Function::New(env, RecvMsg, "recvMsg"));
  exports.Set("sendMsg", Napi::Function::New(env, SendMsg, "sendMsg"));
  exports.Set("FdWatcher", FdWatcher::Define(env));
}

}  // namespace vdx
