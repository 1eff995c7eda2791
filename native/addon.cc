#include "shim.h"

#include <cstring>
#include <unistd.h>

namespace vdx {

Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

static bool ArgNumber(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() > i && info[i].IsNumber()) return true;
  Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a number")
      .ThrowAsJavaScriptException();
  return false;
}

bool ArgInt32(const Napi::CallbackInfo& info, size_t i, int32_t* out) {
  if (!ArgNumber(info, i)) return false;
  *out = info[i].As<Napi::Number>().Int32Value();
  return true;
}

bool ArgUint32(const Napi::CallbackInfo& info, size_t i, uint32_t* out) {
  if (!ArgNumber(info, i)) return false;
  *out = info[i].As<Napi::Number>().Uint32Value();
  return true;
}

bool ArgSize(const Napi::CallbackInfo& info, size_t i, size_t* out) {
  if (!ArgNumber(info, i)) return false;
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0) {
    Napi::RangeError::New(info.Env(), "argument " + std::to_string(i) + " out of range").ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<size_t>(d);
  return true;
}

// close(2) returns 0 or -errno; closing twice is the caller's bug but harmless
// here since the wrapper forgets the fd after the first call.
static Napi::Value Close(const Napi::CallbackInfo& info) {
  int32_t fd;
  if (!ArgInt32(info, 0, &fd)) return info.Env().Undefined();
  int rc = close(fd);
  return Napi::Number::New(info.Env(), rc < 0 ? -errno : 0);
}

}  // namespace vdx

static Napi::Object InitShim(Napi::Env env, Napi::Object exports) {
  exports.Set("close", Napi::Function::New(env, vdx::Close, "close"));
  vdx::InitEventfd(env, exports);
  vdx::InitMman(env, exports);
  vdx::InitSocket(env, exports);
  vdx::InitEpoll(env, exports);
  vdx::InitUring(env, exports);
  vdx::InitIoctl(env, exports);
  vdx::InitNetlink(env, exports);
  vdx::InitSched(env, exports);
  vdx::InitNotify(env, exports);
  vdx::InitClock(env, exports);
  vdx::InitRbd(env, exports);
  vdx::InitNet(env, exports);
  vdx::InitCrypto(env, exports);
  return exports;
}

NODE_API_MODULE(vdx_native, InitShim)
