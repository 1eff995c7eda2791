#include "shim.h"

namespace vdx {

void InitRbd(Napi::Env, Napi::Object) {}

}  // namespace vdx
