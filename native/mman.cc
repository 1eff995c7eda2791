// Mappings: mmap/munmap, views of another thread's mapping, memfd, memcpy.
// Addresses cross into JS as numbers: x86_64 user addresses are < 2^47, exact in a double.
#include "shim.h"

#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

namespace vdx {

static Napi::Value Mapping(Napi::Env env, void* addr, size_t len) {
  Napi::Object o = Napi::Object::New(env);
  // No finalizer: the owner unmaps explicitly (munmap detaches the buffer first,
  // so a stale view reads as empty instead of faulting).
  o.Set("buffer", Napi::ArrayBuffer::New(env, addr, len));
  o.Set("addr", Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(addr))));
  return o;
}

// mmap(fd, offset, length, prot, flags) -> {buffer, addr}; fd -1 with MAP_ANONYMOUS.
static Napi::Value Mmap(const Napi::CallbackInfo& info) {
  int32_t fd, prot, flags;
  size_t offset, len;
  if (!ArgInt32(info, 0, &fd) || !ArgSize(info, 1, &offset) || !ArgSize(info, 2, &len) ||
      !ArgInt32(info, 3, &prot) || !ArgInt32(info, 4, &flags))
    return info.Env().Undefined();
  if (len == 0) return ThrowErrno(info.Env(), EINVAL, "mmap");
  void* p = mmap(nullptr, len, prot, flags, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return ThrowErrno(info.Env(), errno, "mmap");
  return Mapping(info.Env(), p, len);
}

// munmap(buffer, addr, length) -> 0 or -errno. Detaches `buffer` (if given) first.
static Napi::Value Munmap(const Napi::CallbackInfo& info) {
  size_t addr, len;
  if (!ArgSize(info, 1, &addr) || !ArgSize(info, 2, &len)) return info.Env().Undefined();
  if (info[0].IsArrayBuffer()) {
    Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
    if (!ab.IsDetached()) ab.Detach();
  }
  int rc = munmap(reinterpret_cast<void*>(addr), len);
  return Napi::Number::New(info.Env(), rc < 0 ? -errno : 0);
}

// viewAddress(addr, length) -> ArrayBuffer over memory another thread mapped.
// The caller must detach() it before the owner unmaps.
static Napi::Value ViewAddress(const Napi::CallbackInfo& info) {
  size_t addr, len;
  if (!ArgSize(info, 0, &addr) || !ArgSize(info, 1, &len)) return info.Env().Undefined();
  if (addr == 0 || len == 0) return ThrowErrno(info.Env(), EINVAL, "viewAddress");
  return Napi::ArrayBuffer::New(info.Env(), reinterpret_cast<void*>(addr), len);
}

static Napi::Value Detach(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    Napi::TypeError::New(info.Env(), "argument 0 must be an ArrayBuffer").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  if (!ab.IsDetached()) ab.Detach();
  return info.Env().Undefined();
}

// memfdCreate(name, flags) -> fd
static Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  uint32_t flags;
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(info.Env(), "argument 0 must be a string").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  if (!ArgUint32(info, 1, &flags)) return info.Env().Undefined();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  int fd = memfd_create(name.c_str(), flags);
  if (fd < 0) return ThrowErrno(info.Env(), errno, "memfd_create");
  return Napi::Number::New(info.Env(), fd);
}

// ftruncate(fd, length) -> throws on failure (setup only).
static Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  int32_t fd;
  size_t len;
  if (!ArgInt32(info, 0, &fd) || !ArgSize(info, 1, &len)) return info.Env().Undefined();
  if (ftruncate(fd, static_cast<off_t>(len)) < 0) return ThrowErrno(info.Env(), errno, "ftruncate");
  return info.Env().Undefined();
}

// memcpy(dstAddr, srcAddr, length): copies between two live mappings the caller
// has validated (guest memory and a malloc bdev). Returns nothing, never fails.
static Napi::Value Memcpy(const Napi::CallbackInfo& info) {
  size_t dst, src, len;
  if (!ArgSize(info, 0, &dst) || !ArgSize(info, 1, &src) || !ArgSize(info, 2, &len)) return info.Env().Undefined();
  memcpy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), len);
  return info.Env().Undefined();
}

// memset(dstAddr, byte, length): as memcpy, for write-zeroes.
static Napi::Value Memset(const Napi::CallbackInfo& info) {
  size_t dst, len;
  uint32_t byte;
  if (!ArgSize(info, 0, &dst) || !ArgUint32(info, 1, &byte) || !ArgSize(info, 2, &len)) return info.Env().Undefined();
  memset(reinterpret_cast<void*>(dst), static_cast<int>(byte & 0xff), len);
  return info.Env().Undefined();
}

#ifndef MADV_POPULATE_WRITE  // Linux 5.14; older libc headers lack it
#define MADV_POPULATE_WRITE 23
#endif

// madvise(addr, length, advice) -> 0 or -errno. The malloc bdev asks for
// transparent huge pages, populates up front and releases discarded ranges.
static Napi::Value Madvise(const Napi::CallbackInfo& info) {
  size_t addr, len;
  uint32_t advice;
  if (!ArgSize(info, 0, &addr) || !ArgSize(info, 1, &len) || !ArgUint32(info, 2, &advice)) return info.Env().Undefined();
  int rc = madvise(reinterpret_cast<void*>(addr), len, static_cast<int>(advice));
  return Napi::Number::New(info.Env(), rc < 0 ? -errno : 0);
}

void InitMman(Napi::Env env, Napi::Object exports) {
  exports.Set("mmap", Napi::Function::New(env, Mmap, "mmap"));
  exports.Set("munmap", Napi::Function::New(env, Munmap, "munmap"));
  exports.Set("viewAddress", Napi::Function::New(env, ViewAddress, "viewAddress"));
  exports.Set("detach", Napi::Function::New(env, Detach, "detach"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate, "ftruncate"));
  exports.Set("memcpy", Napi::Function::New(env, Memcpy, "memcpy"));
  exports.Set("memset", Napi::Function::New(env, Memset, "memset"));
  exports.Set("madvise", Napi::Function::New(env, Madvise, "madvise"));
  exports.Set("MADV_DONTNEED", Napi::Number::New(env, MADV_DONTNEED));
  exports.Set("MADV_HUGEPAGE", Napi::Number::New(env, MADV_HUGEPAGE));
  exports.Set("MADV_POPULATE_WRITE", Napi::Number::New(env, MADV_POPULATE_WRITE));
  exports.Set("MAP_NORESERVE", Napi::Number::New(env, MAP_NORESERVE));
  exports.Set("PROT_READ", Napi::Number::New(env, PROT_READ));
  exports.Set("PROT_WRITE", Napi::Number::New(env, PROT_WRITE));
  exports.Set("MAP_SHARED", Napi::Number::New(env, MAP_SHARED));
  exports.Set("MAP_PRIVATE", Napi::Number::New(env, MAP_PRIVATE));
  exports.Set("MAP_ANONYMOUS", Napi::Number::New(env, MAP_ANONYMOUS));
  exports.Set("MAP_POPULATE", Napi::Number::New(env, MAP_POPULATE));
  exports.Set("MFD_CLOEXEC", Napi::Number::New(env, MFD_CLOEXEC));
}

}  // namespace vdx
