// Helpers shared by the shim's syscall families. The shim holds no protocol
// logic: each export checks its arguments, makes one syscall and returns a
// value, -errno (hot path) or throws a VdxError-shaped JS error (slow path).
#pragma once
#include <napi.h>
#include <cerrno>
#include <cstdint>

namespace vdx {

// Throws a JS Error carrying errno and the syscall name; src/native turns it
// into a VdxError. Returns an empty value so callers can `return ThrowErrno(...)`.
Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall);

// Argument checks throw TypeError: a wrong type is a programming error in the
// TypeScript layer, never guest input.
bool ArgInt32(const Napi::CallbackInfo& info, size_t i, int32_t* out);
bool ArgUint32(const Napi::CallbackInfo& info, size_t i, uint32_t* out);
// A host address or a length: a non-negative integer below 2^53 (RangeError otherwise).
bool ArgSize(const Napi::CallbackInfo& info, size_t i, size_t* out);

void InitEventfd(Napi::Env env, Napi::Object exports);
void InitMman(Napi::Env env, Napi::Object exports);
void InitSocket(Napi::Env env, Napi::Object exports);
void InitEpoll(Napi::Env env, Napi::Object exports);
void InitUring(Napi::Env env, Napi::Object exports);
void InitIoctl(Napi::Env env, Napi::Object exports);
void InitNetlink(Napi::Env env, Napi::Object exports);
void InitSched(Napi::Env env, Napi::Object exports);
void InitNotify(Napi::Env env, Napi::Object exports);
void InitClock(Napi::Env env, Napi::Object exports);
void InitRbd(Napi::Env env, Napi::Object exports);
void InitNet(Napi::Env env, Napi::Object exports);
void InitCrypto(Napi::Env env, Napi::Object exports);

}  // namespace vdx
