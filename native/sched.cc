// CPU affinity for reactor threads: sched_setaffinity(2) on the calling thread.
#include "shim.h"

#include <sched.h>

namespace vdx {

// pinThread(cpus: number[]) -> 0 or -errno; applies to the calling thread only.
static Napi::Value PinThread(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsArray()) {
    Napi::TypeError::New(info.Env(), "pinThread(cpus: number[])").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::Array a = info[0].As<Napi::Array>();
  cpu_set_t set;
  CPU_ZERO(&set);
  for (uint32_t i = 0; i < a.Length(); i++) {
    int32_t cpu = a.Get(i).As<Napi::Number>().Int32Value();
    if (cpu < 0 || cpu >= CPU_SETSIZE) return Napi::Number::New(info.Env(), -EINVAL);
    CPU_SET(cpu, &set);
  }
  int rc = sched_setaffinity(0, sizeof set, &set);
  return Napi::Number::New(info.Env(), rc < 0 ? -errno : 0);
}

// onlineCpus() -> the CPUs this process may run on.
static Napi::Value AllowedCpus(const Napi::CallbackInfo& info) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) < 0) return ThrowErrno(info.Env(), errno, "sched_getaffinity");
  Napi::Array out = Napi::Array::New(info.Env());
  uint32_t n = 0;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set)) out.Set(n++, Napi::Number::New(info.Env(), c));
  return out;
}

void InitSched(Napi::Env env, Napi::Object exports) {
  exports.Set("pinThread", Napi::Function::New(env, PinThread, "pinThread"));
  exports.Set("allowedCpus", Napi::Function::New(env, AllowedCpus, "allowedCpus"));
}

}  // namespace vdx
