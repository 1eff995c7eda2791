// One AF_UNIX datagram to a named socket: the transport of sd_notify(3), which
// Node's net module cannot speak (it has no SOCK_DGRAM unix sockets). The
// message format (READY=1, STATUS=...) is src/systemd/notify.ts's business.
#include "shim.h"

#include <cstddef>
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace vdx {

// unixDgramSend(path, data: Uint8Array) -> bytes sent | -errno.
// A path starting with '@' names an abstract socket: the '@' becomes the
// leading NUL of sun_path and the address length covers the name only (no
// trailing NUL), as sd_notify(3) does. Like libsystemd, a name must leave room
// for a NUL in sun_path (at most 107 bytes), else -EINVAL; an empty one too.
// The send is MSG_DONTWAIT: when the receiver's queue is full the control
// plane gets -EAGAIN rather than blocking its event loop on systemd.
static Napi::Value UnixDgramSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, "unixDgramSend(path: string, data: Uint8Array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
  sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path) return Napi::Number::New(env, -EINVAL);
  memcpy(sa.sun_path, path.data(), path.size());
  socklen_t len = offsetof(sockaddr_un, sun_path) + path.size() + 1;  // path socket: count the NUL
  if (path[0] == '@') {
    sa.sun_path[0] = '\0';
    len = offsetof(sockaddr_un, sun_path) + path.size();
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Napi::Number::New(env, -errno);
  ssize_t n = sendto(fd, data.Data(), data.ByteLength(), MSG_DONTWAIT | MSG_NOSIGNAL,
                     reinterpret_cast<sockaddr*>(&sa), len);
  int e = errno;
  close(fd);
  return Napi::Number::New(env, n < 0 ? -e : static_cast<double>(n));
}

void InitNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("unixDgramSend", Napi::Function::New(env, UnixDgramSend, "unixDgramSend"));
}

}  // namespace vdx
