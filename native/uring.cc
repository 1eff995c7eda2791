// io_uring: setup maps the rings for TypeScript, which fills SQEs and reaps CQEs
// itself; the shim only enters the kernel.
#include "shim.h"

#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace vdx {

static Napi::Value Map(Napi::Env env, void* p, size_t len) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("buffer", Napi::ArrayBuffer::New(env, p, len));
  o.Set("addr", Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(p))));
  o.Set("length", Napi::Number::New(env, static_cast<double>(len)));
  return o;
}

// uringSetup(entries, flags) -> {fd, features, sqEntries, cqEntries, sqOff{}, cqOff{}, sq, cq, sqes}
// sq and cq are the same mapping when the kernel has IORING_FEAT_SINGLE_MMAP.
static Napi::Value UringSetup(const Napi::CallbackInfo& info) {
  uint32_t entries, flags;
  if (!ArgUint32(info, 0, &entries) || !ArgUint32(info, 1, &flags)) return info.Env().Undefined();
  Napi::Env env = info.Env();
  io_uring_params p{};
  p.flags = flags;
  int fd = static_cast<int>(syscall(__NR_io_uring_setup, entries, &p));
  if (fd < 0) return ThrowErrno(env, errno, "io_uring_setup");
  size_t sqLen = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
  size_t cqLen = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  bool single = p.features & IORING_FEAT_SINGLE_MMAP;
  if (single && cqLen > sqLen) sqLen = cqLen;
  void* sq = mmap(nullptr, sqLen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (sq == MAP_FAILED) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, e, "mmap(sq ring)");
  }
  void* cq = sq;
  if (!single) {
    cq = mmap(nullptr, cqLen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (cq == MAP_FAILED) {
      int e = errno;
      munmap(sq, sqLen);
      close(fd);
      return ThrowErrno(env, e, "mmap(cq ring)");
    }
  }
  size_t sqesLen = p.sq_entries * sizeof(io_uring_sqe);
  void* sqes = mmap(nullptr, sqesLen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) {
    int e = errno;
    munmap(sq, sqLen);
    if (!single) munmap(cq, cqLen);
    close(fd);
    return ThrowErrno(env, e, "mmap(sqes)");
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("fd", Napi::Number::New(env, fd));
  r.Set("features", Napi::Number::New(env, p.features));
  r.Set("sqEntries", Napi::Number::New(env, p.sq_entries));
  r.Set("cqEntries", Napi::Number::New(env, p.cq_entries));
  Napi::Object so = Napi::Object::New(env);
  so.Set("head", p.sq_off.head);
  so.Set("tail", p.sq_off.tail);
  so.Set("ringMask", p.sq_off.ring_mask);
  so.Set("ringEntries", p.sq_off.ring_entries);
  so.Set("flags", p.sq_off.flags);
  so.Set("dropped", p.sq_off.dropped);
  so.Set("array", p.sq_off.array);
  r.Set("sqOff", so);
  Napi::Object co = Napi::Object::New(env);
  co.Set("head", p.cq_off.head);
  co.Set("tail", p.cq_off.tail);
  co.Set("ringMask", p.cq_off.ring_mask);
  co.Set("ringEntries", p.cq_off.ring_entries);
  co.Set("overflow", p.cq_off.overflow);
  co.Set("cqes", p.cq_off.cqes);
  co.Set("flags", p.cq_off.flags);
  r.Set("cqOff", co);
  r.Set("sq", Map(env, sq, sqLen));
  r.Set("cq", single ? r.Get("sq") : Map(env, cq, cqLen));
  r.Set("sqes", Map(env, sqes, sqesLen));
  r.Set("singleMmap", Napi::Boolean::New(env, single));
  return r;
}

// uringEnter(fd, toSubmit, minComplete, flags) -> consumed SQEs or -errno
static Napi::Value UringEnter(const Napi::CallbackInfo& info) {
  int32_t fd;
  uint32_t toSubmit, minComplete, flags;
  if (!ArgInt32(info, 0, &fd) || !ArgUint32(info, 1, &toSubmit) || !ArgUint32(info, 2, &minComplete) ||
      !ArgUint32(info, 3, &flags))
    return info.Env().Undefined();
  long rc = syscall(__NR_io_uring_enter, fd, toSubmit, minComplete, flags, nullptr, 0);
  return Napi::Number::New(info.Env(), rc < 0 ? -errno : static_cast<double>(rc));
}

// uringRegisterEventfd(fd, eventfd) -> 0 or -errno: completions signal the eventfd.
static Napi::Value UringRegisterEventfd(const Napi::CallbackInfo& info) {
  int32_t fd, efd;
  if (!ArgInt32(info, 0, &fd) || !ArgInt32(info, 1, &efd)) return info.Env().Undefined();
  long rc = syscall(__NR_io_uring_register, fd, IORING_REGISTER_EVENTFD, &efd, 1);
  return Napi::Number::New(info.Env(), rc < 0 ? -errno : 0);
}

// uringRegisterFiles(fd, Int32Array fds) -> 0 or -errno
static Napi::Value UringRegisterFiles(const Napi::CallbackInfo& info) {
  int32_t fd;
  if (!ArgInt32(info, 0, &fd) || info.Length() < 2 || !info[1].IsTypedArray()) {
    if (!info.Env().IsExceptionPending())
      Napi::TypeError::New(info.Env(), "uringRegisterFiles(fd, Int32Array)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::Int32Array fds = info[1].As<Napi::Int32Array>();
  long rc = syscall(__NR_io_uring_register, fd, IORING_REGISTER_FILES, fds.Data(), fds.ElementLength());
  return Napi::Number::New(info.Env(), rc < 0 ? -errno : 0);
}

void InitUring(Napi::Env env, Napi::Object exports) {
  exports.Set("uringSetup", Napi::Function::New(env, UringSetup, "uringSetup"));
  exports.Set("uringEnter", Napi::Function::New(env, UringEnter, "uringEnter"));
  exports.Set("uringRegisterEventfd", Napi::Function::New(env, UringRegisterEventfd, "uringRegisterEventfd"));
  exports.Set("uringRegisterFiles", Napi::Function::New(env, UringRegisterFiles, "uringRegisterFiles"));
}

}  // namespace vdx
