// ioctl(2) with a caller-owned argument buffer (VDUSE, vhost), and plain
// read/write on a raw fd for character devices such as /dev/vduse/$NAME.
#include "shim.h"

#include <sys/ioctl.h>
#include <unistd.h>

namespace vdx {

static bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* len) {
  if (info.Length() > i && info[i].IsTypedArray()) {
    Napi::TypedArray t = info[i].As<Napi::TypedArray>();
    Napi::ArrayBuffer ab = t.ArrayBuffer();
    *data = static_cast<uint8_t*>(ab.Data()) + t.ByteOffset();
    *len = t.ByteLength();
    return true;
  }
  if (info.Length() > i && (info[i].IsNull() || info[i].IsUndefined())) {
    *data = nullptr;
    *len = 0;
    return true;
  }
  Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a TypedArray or null")
      .ThrowAsJavaScriptException();
  return false;
}

// ioctl(fd, request, arg: Uint8Array | null) -> return value (>= 0) or -errno.
// The request is passed as an unsigned 32-bit number (most have the top bit set).
// The kernel checks the size encoded in the request; we check the buffer holds it.
static Napi::Value Ioctl(const Napi::CallbackInfo& info) {
  int32_t fd;
  uint32_t req;
  uint8_t* data;
  size_t len;
  if (!ArgInt32(info, 0, &fd) || !ArgUint32(info, 1, &req) || !ArgBuffer(info, 2, &data, &len))
    return info.Env().Undefined();
  size_t need = (req >> 16) & 0x3fff;  // _IOC_SIZE
  if (data == nullptr && need != 0 && ((req >> 30) != 0)) return Napi::Number::New(info.Env(), -EFAULT);
  if (data != nullptr && len < need) return Napi::Number::New(info.Env(), -EINVAL);
  int rc = data ? ioctl(fd, static_cast<unsigned long>(req), data) : ioctl(fd, static_cast<unsigned long>(req), 0UL);
  return Napi::Number::New(info.Env(), rc < 0 ? -errno : rc);
}

// read(fd, u8) -> bytes or -errno
static Napi::Value Read(const Napi::CallbackInfo& info) {
  int32_t fd;
  uint8_t* data;
  size_t len;
  if (!ArgInt32(info, 0, &fd) || !ArgBuffer(info, 1, &data, &len)) return info.Env().Undefined();
  ssize_t n = read(fd, data, len);
  return Napi::Number::New(info.Env(), n < 0 ? -errno : static_cast<double>(n));
}

// write(fd, u8) -> bytes or -errno
static Napi::Value Write(const Napi::CallbackInfo& info) {
  int32_t fd;
  uint8_t* data;
  size_t len;
  if (!ArgInt32(info, 0, &fd) || !ArgBuffer(info, 1, &data, &len)) return info.Env().Undefined();
  ssize_t n = write(fd, data, len);
  return Napi::Number::New(info.Env(), n < 0 ? -errno : static_cast<double>(n));
}

void InitIoctl(Napi::Env env, Napi::Object exports) {
  exports.Set("ioctl", Napi::Function::New(env, Ioctl, "ioctl"));
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("write", Napi::Function::New(env, Write, "write"));
}

}  // namespace vdx
