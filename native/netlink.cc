// Netlink sockets (generic netlink for the vdpa family). Messages are built and
// parsed in TypeScript; the shim opens the socket and moves bytes.
#include "shim.h"

#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

namespace vdx {

// netlinkOpen(protocol) -> fd, bound, with extended ACKs requested and the
// echoed request capped (errors carry only its header). Non-blocking.
static Napi::Value NetlinkOpen(const Napi::CallbackInfo& info) {
  int32_t proto;
  if (!ArgInt32(info, 0, &proto)) return info.Env().Undefined();
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, proto);
  if (fd < 0) return ThrowErrno(info.Env(), errno, "socket(AF_NETLINK)");
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(info.Env(), e, "bind(AF_NETLINK)");
  }
  int one = 1;
  // Best effort: kernels without extended ACKs still answer, just with less detail.
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  return Napi::Number::New(info.Env(), fd);
}

void InitNetlink(Napi::Env env, Napi::Object exports) {
  exports.Set("netlinkOpen", Napi::Function::New(env, NetlinkOpen, "netlinkOpen"));
  exports.Set("NETLINK_GENERIC", Napi::Number::New(env, NETLINK_GENERIC));
}

}  // namespace vdx
