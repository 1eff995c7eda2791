// CLOCK_MONOTONIC as systemd reads it. Node's process.hrtime is documented only
// as "an arbitrary time in the past", so values another process compares
// against its own clock (sd_notify's MONOTONIC_USEC=) come from here.
#include "shim.h"

#include <ctime>

namespace vdx {

// clockMonotonicUs() -> microseconds of CLOCK_MONOTONIC (exact in a double for
// 285 years of uptime), or -errno.
static Napi::Value ClockMonotonicUs(const Napi::CallbackInfo& info) {
  timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0) return Napi::Number::New(info.Env(), -errno);
  return Napi::Number::New(info.Env(), static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec / 1000));
}

void InitClock(Napi::Env env, Napi::Object exports) {
  exports.Set("clockMonotonicUs", Napi::Function::New(env, ClockMonotonicUs, "clockMonotonicUs"));
}

}  // namespace vdx
