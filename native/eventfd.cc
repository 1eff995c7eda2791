// eventfd(2): kick and call notifications between QEMU/the kernel and reactors.
#include "shim.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace vdx {

// eventfd(initval, flags) -> fd; throws (slow path: setup only).
static Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  uint32_t initval, flags;
  if (!ArgUint32(info, 0, &initval) || !ArgUint32(info, 1, &flags)) return info.Env().Undefined();
  int fd = eventfd(initval, static_cast<int>(flags));
  if (fd < 0) return ThrowErrno(info.Env(), errno, "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

// eventfdRead(fd) -> counter (as a number; counters never reach 2^53 here) or
// -errno (-EAGAIN when a non-blocking eventfd is zero). Hot path: no throw.
static Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  int32_t fd;
  if (!ArgInt32(info, 0, &fd)) return info.Env().Undefined();
  uint64_t v = 0;
  ssize_t n = read(fd, &v, sizeof v);
  if (n < 0) return Napi::Number::New(info.Env(), -errno);
  if (n != sizeof v) return Napi::Number::New(info.Env(), -EIO);
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

// eventfdWrite(fd, add) -> 0 or -errno. Hot path: no throw.
static Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  int32_t fd;
  uint32_t add;
  if (!ArgInt32(info, 0, &fd) || !ArgUint32(info, 1, &add)) return info.Env().Undefined();
  uint64_t v = add;
  ssize_t n = write(fd, &v, sizeof v);
  if (n < 0) return Napi::Number::New(info.Env(), -errno);
  return Napi::Number::New(info.Env(), n == sizeof v ? 0 : -EIO);
}

void InitEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfd", Napi::Function::New(env, Eventfd, "eventfd"));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead, "eventfdRead"));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite, "eventfdWrite"));
  exports.Set("EFD_NONBLOCK", Napi::Number::New(env, EFD_NONBLOCK));
  exports.Set("EFD_CLOEXEC", Napi::Number::New(env, EFD_CLOEXEC));
  exports.Set("EFD_SEMAPHORE", Napi::Number::New(env, EFD_SEMAPHORE));
}

}  // namespace vdx
