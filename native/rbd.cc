// librbd/librados, loaded at run time (dlopen of the sonames) so the addon
// builds without Ceph headers and runs where Ceph is absent. No policy here:
// option values come from TypeScript (src/bdev/rbd.ts); this file opens,
// submits, reaps and closes.
//
// Threads: the blocking setup calls (rados_connect, rbd_open, rbd_close,
// rbd_resize2, rados_shutdown) run in Napi::AsyncWorker on libuv's pool and
// return Promises. Reactors (worker threads that load their own instance of
// this .so) share the process-wide tables below; one rbd_image_t per bdev is
// shared by every reactor's channel.
//
// Completions: librbd has one event queue and one notification fd per image
// (rbd_set_image_notification; a second one gives -EINVAL), so completions are
// demultiplexed here. Each completion's arg is (channel id << 32 | slot). Any
// channel's rbdReap, under the image mutex, drains rbd_poll_io_events until it
// comes back short and appends (slot, ret) to the owning channel's queue,
// writing that channel's eventfd when it was not yet signalled. A channel's
// notifyFd is an epoll fd holding both the image eventfd and its own eventfd,
// so it is readable while either is.
//
// rbdReap makes no system call: the reactor calls it on every pass while
// librbd owes the channel I/O, and one read() per pass was most of the
// reactor's CPU per request (an eventfd read per empty pass, some 30 passes per
// wake-up). The eventfds are read only by rbdClearNotify, which the reactor
// calls when its epoll reported notifyFd readable.
//
// No lost wake-up: librbd pushes a completion onto the image queue *before* it
// writes the image eventfd (AioCompletion::complete_event_socket). A busy
// reactor pops completions without clearing the eventfd, so the eventfd stays
// readable and its next sleep returns at once. rbdClearNotify zeroes it and,
// under the same mutex, drains the image queue, so every completion whose
// notify that read consumed is queued for its channel: this channel's is
// reaped by the pass that follows every wake-up, another's signals that
// channel's eventfd (unless still set). One whose notify came after the read
// leaves the eventfd readable, which wakes every channel's epoll. The owner
// clears its eventfd and takes its queue under that mutex too, so it either
// takes the entry or finds the eventfd set.
#include "shim.h"

#include <dlfcn.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace vdx {

// Minimal prototypes of librados.h / librbd.h (Ceph >= 16, librbd >= 1.12).
typedef void* rados_t;
typedef void* rados_ioctx_t;
typedef void* rbd_image_t;
typedef void* rbd_completion_t;
typedef void (*rbd_callback_t)(rbd_completion_t cb, void* arg);
typedef void (*rbd_update_callback_t)(void* arg);
typedef int (*librbd_progress_fn_t)(uint64_t offset, uint64_t total, void* ptr);
struct rbd_image_info_t {
  uint64_t size;
  uint64_t obj_size;
  uint64_t num_objs;
  int order;
  char block_name_prefix[24];  // RBD_MAX_BLOCK_NAME_SIZE
  int64_t parent_pool;
  char parent_name[96];        // RBD_MAX_IMAGE_NAME_SIZE
};
static constexpr int EVENT_TYPE_EVENTFD = 2;

struct Api {
  int (*rados_create2)(rados_t*, const char*, const char*, uint64_t);
  int (*rados_conf_read_file)(rados_t, const char*);
  int (*rados_conf_set)(rados_t, const char*, const char*);
  int (*rados_connect)(rados_t);
  void (*rados_shutdown)(rados_t);
  int (*rados_ioctx_create)(rados_t, const char*, rados_ioctx_t*);
  void (*rados_ioctx_destroy)(rados_ioctx_t);
  void (*rados_ioctx_set_namespace)(rados_ioctx_t, const char*);
  void (*rbd_version)(int*, int*, int*);
  int (*rbd_open)(rados_ioctx_t, const char*, rbd_image_t*, const char*);
  int (*rbd_close)(rbd_image_t);
  int (*rbd_get_size)(rbd_image_t, uint64_t*);
  int (*rbd_stat)(rbd_image_t, rbd_image_info_t*, size_t);
  int (*rbd_resize2)(rbd_image_t, uint64_t, bool, librbd_progress_fn_t, void*);
  int (*rbd_update_watch)(rbd_image_t, uint64_t*, rbd_update_callback_t, void*);
  int (*rbd_update_unwatch)(rbd_image_t, uint64_t);
  int (*rbd_set_image_notification)(rbd_image_t, int, int);
  int (*rbd_poll_io_events)(rbd_image_t, rbd_completion_t*, int);
  int (*rbd_aio_create_completion)(void*, rbd_callback_t, rbd_completion_t*);
  void* (*rbd_aio_get_arg)(rbd_completion_t);
  ssize_t (*rbd_aio_get_return_value)(rbd_completion_t);
  void (*rbd_aio_release)(rbd_completion_t);
  int (*rbd_aio_readv)(rbd_image_t, const struct iovec*, int, uint64_t, rbd_completion_t);
  int (*rbd_aio_writev)(rbd_image_t, const struct iovec*, int, uint64_t, rbd_completion_t);
  int (*rbd_aio_flush)(rbd_image_t, rbd_completion_t);
  int (*rbd_aio_discard)(rbd_image_t, uint64_t, uint64_t, rbd_completion_t);
  // optional (librbd 1.16 has it; older releases may not): WRITE_ZEROES -> -EOPNOTSUPP
  int (*rbd_aio_write_zeroes)(rbd_image_t, uint64_t, size_t, rbd_completion_t, int, int);
};

static std::mutex g_mu;  // the library table, clusters, images, channel slots
static Api g_api;
static bool g_loaded = false;
static std::string g_loadError;
static std::string g_version;

static const char* LibName(const char* env, const char* dflt) {
  const char* v = getenv(env);
  return v && *v ? v : dflt;
}

// Load once per process (under g_mu). Never dlclose: librados owns threads and
// static state (RTLD_NODELETE keeps it even if a handle were closed).
static bool LoadLocked(std::string* err) {
  if (g_loaded) return true;
  if (!g_loadError.empty()) {
    *err = g_loadError;
    return false;
  }
  const int flags = RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE;
  // VDX_LIBRADOS / VDX_LIBRBD override the sonames (tests simulate a machine without Ceph).
  void* rados = dlopen(LibName("VDX_LIBRADOS", "librados.so.2"), flags);
  void* rbd = rados ? dlopen(LibName("VDX_LIBRBD", "librbd.so.1"), flags) : nullptr;
  if (!rados || !rbd) {
    const char* e = dlerror();
    g_loadError = std::string("librbd1 is not installed (apt install librbd1): ") + (e ? e : "dlopen failed");
    *err = g_loadError;
    return false;
  }
  std::string missing;
  auto sym = [&](void* lib, const char* name, bool required) -> void* {
    void* p = dlsym(lib, name);
    if (!p && required) missing += std::string(missing.empty() ? "" : ", ") + name;
    return p;
  };
#define RADOS(n) g_api.n = reinterpret_cast<decltype(g_api.n)>(sym(rados, #n, true))
#define RBD(n) g_api.n = reinterpret_cast<decltype(g_api.n)>(sym(rbd, #n, true))
  RADOS(rados_create2);
  RADOS(rados_conf_read_file);
  RADOS(rados_conf_set);
  RADOS(rados_connect);
  RADOS(rados_shutdown);
  RADOS(rados_ioctx_create);
  RADOS(rados_ioctx_destroy);
  RADOS(rados_ioctx_set_namespace);
  RBD(rbd_version);
  RBD(rbd_open);
  RBD(rbd_close);
  RBD(rbd_get_size);
  RBD(rbd_stat);
  RBD(rbd_resize2);
  RBD(rbd_update_watch);
  RBD(rbd_update_unwatch);
  RBD(rbd_set_image_notification);
  RBD(rbd_poll_io_events);
  RBD(rbd_aio_create_completion);
  RBD(rbd_aio_get_arg);
  RBD(rbd_aio_get_return_value);
  RBD(rbd_aio_release);
  RBD(rbd_aio_readv);
  RBD(rbd_aio_writev);
  RBD(rbd_aio_flush);
  RBD(rbd_aio_discard);
#undef RADOS
#undef RBD
  g_api.rbd_aio_write_zeroes =
      reinterpret_cast<decltype(g_api.rbd_aio_write_zeroes)>(sym(rbd, "rbd_aio_write_zeroes", false));
  if (!missing.empty()) {
    g_loadError = "librbd/librados lack " + missing + " (librbd >= 1.12 is required)";
    *err = g_loadError;
    return false;
  }
  int maj = 0, min = 0, extra = 0;
  g_api.rbd_version(&maj, &min, &extra);
  g_version = std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(extra);
  if (maj < 1 || (maj == 1 && min < 12)) {
    g_loadError = "librbd " + g_version + " is too old (>= 1.12 is required; apt install librbd1 from Ceph 16 or later)";
    *err = g_loadError;
    return false;
  }
  g_loaded = true;
  return true;
}

// ---- process-wide state -------------------------------------------------

struct Cluster {
  std::string key;
  int refs = 0;
  std::mutex mu;  // serialises connect for images opened at the same time
  rados_t rados = nullptr;
};

struct Image;

struct Chan {
  uint32_t id = 0;
  Image* im = nullptr;
  int efd = -1;
  int epfd = -1;
  bool closed = false;
  bool signalled = false;  // efd written and not yet cleared by the owner
  std::atomic<int> inflight{0};
  std::vector<int32_t> q;  // (slot, ret) pairs waiting for the owner; capacity = 2 * slots
  size_t qhead = 0;
  char* arena = nullptr;
  size_t arenaBytes = 0;
  uint32_t slots = 0;
};

struct Image {
  uint32_t id = 0;
  std::string key;
  Cluster* cluster = nullptr;
  rados_ioctx_t io = nullptr;
  rbd_image_t img = nullptr;
  int efd = -1;
  std::mutex mu;  // reaping and the channel list
  std::vector<Chan*> chans;
  std::atomic<int> outstanding{0};
  bool watching = false;
  uint64_t watchHandle = 0;
  int watchFd = -1;
};

static std::map<std::string, Cluster*> g_clusters;
static std::map<uint32_t, Image*> g_images;
static uint32_t g_nextImage = 1;
static constexpr uint32_t kChanTable = 4096;
static Chan* g_chanTable[kChanTable];
static uint32_t g_chanGen = 0;
static constexpr uint32_t kIovecBytes = 16;
static constexpr int kReapBatch = 64;

// Only the owning reactor thread uses a channel id, and it got the id from
// rbdChannelOpen on that thread, so this unlocked read is ordered after the write.
static Chan* LookupChan(uint32_t id) {
  Chan* c = g_chanTable[id % kChanTable];
  return c && c->id == id ? c : nullptr;
}

static void FreeChan(Chan* c) {
  free(c->arena);
  delete c;
}

// Under im->mu: move every completed event to its channel's queue. The
// reaper (null when closing) is about to take its own queue: signalling it
// would only cost a write here, a spurious wake-up and two reads.
static int DrainImageLocked(Image* im, const Chan* reaper) {
  rbd_completion_t comps[kReapBatch];
  int total = 0;
  for (;;) {
    int n = g_api.rbd_poll_io_events(im->img, comps, kReapBatch);
    if (n <= 0) break;
    for (int i = 0; i < n; i++) {
      uint64_t arg = reinterpret_cast<uintptr_t>(g_api.rbd_aio_get_arg(comps[i]));
      ssize_t ret = g_api.rbd_aio_get_return_value(comps[i]);
      g_api.rbd_aio_release(comps[i]);
      uint32_t cid = static_cast<uint32_t>(arg >> 32);
      int32_t slot = static_cast<int32_t>(arg & 0xffffffffu);
      Chan* c = nullptr;
      for (size_t k = 0; k < im->chans.size(); k++)
        if (im->chans[k]->id == cid) c = im->chans[k];
      if (!c) continue;
      if (c->closed) {
        // A channel closed with I/O in flight: forget the result; free it with its last completion.
        if (--c->inflight == 0) {
          for (size_t k = 0; k < im->chans.size(); k++)
            if (im->chans[k] == c) {
              im->chans.erase(im->chans.begin() + static_cast<long>(k));
              break;
            }
          FreeChan(c);
        }
        continue;
      }
      c->q.push_back(slot);
      c->q.push_back(ret > INT32_MAX ? INT32_MAX : static_cast<int32_t>(ret));
      if (c != reaper && !c->signalled) {
        uint64_t one = 1;
        ssize_t w = write(c->efd, &one, sizeof one);
        (void)w;
        c->signalled = true;
      }
    }
    total += n;
    if (n < kReapBatch) break;
  }
  im->outstanding -= total;
  return total;
}

// ---- promises over libuv's pool -------------------------------------------

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Fail(int err, const char* call, std::string msg = "") {
    err_ = err;
    call_ = call;
    msg_ = msg.empty() ? std::string(call) + ": " + strerror(err) : msg;
  }
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      Napi::Error e = Napi::Error::New(env, msg_);
      e.Set("errno", Napi::Number::New(env, err_));
      e.Set("syscall", Napi::String::New(env, call_));
      deferred_.Reject(e.Value());
    } else {
      deferred_.Resolve(Result(env));
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  int err_ = 0;
  std::string call_, msg_;

 private:
  Napi::Promise::Deferred deferred_;
};

static std::string GetStr(Napi::Object o, const char* k) {
  Napi::Value v = o.Get(k);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

static void UnrefCluster(Cluster* cl) {
  {
    std::lock_guard<std::mutex> g(g_mu);
    if (--cl->refs > 0) return;
    g_clusters.erase(cl->key);
  }
  // rados_shutdown joins librados' threads and may wait on the network: not
  // under g_mu, which reactors take to open channels.
  if (cl->rados) g_api.rados_shutdown(cl->rados);
  delete cl;
}

// rbdOpen({clusterKey, cluster, user, conf, options: [[k, v]...]}, {pool, namespace, image, snapshot, imageKey})
//   -> Promise<{image, size, objSize, order, version}>
class OpenWorker : public PromiseWorker {
 public:
  OpenWorker(Napi::Env env, Napi::Object c, Napi::Object i) : PromiseWorker(env) {
    clusterKey_ = GetStr(c, "clusterKey");
    clusterName_ = GetStr(c, "cluster");
    user_ = GetStr(c, "user");
    conf_ = GetStr(c, "conf");
    Napi::Value ov = c.Get("options");
    if (ov.IsArray()) {
      Napi::Array a = ov.As<Napi::Array>();
      for (uint32_t k = 0; k < a.Length(); k++) {
        Napi::Value p = a.Get(k);
        if (!p.IsArray()) continue;
        Napi::Array pa = p.As<Napi::Array>();
        options_.emplace_back(pa.Get(0u).ToString().Utf8Value(), pa.Get(1u).ToString().Utf8Value());
      }
    }
    pool_ = GetStr(i, "pool");
    ns_ = GetStr(i, "namespace");
    image_ = GetStr(i, "image");
    snap_ = GetStr(i, "snapshot");
    imageKey_ = GetStr(i, "imageKey");
  }

  void Execute() override {
    std::string err;
    Cluster* cl = nullptr;
    {
      std::lock_guard<std::mutex> g(g_mu);
      if (!LoadLocked(&err)) return Fail(ENOENT, "dlopen", err);
      for (auto& kv : g_images)
        if (kv.second->key == imageKey_)
          return Fail(EBUSY, "rbd_open", "image " + pool_ + "/" + image_ + " is already open in this process (one handle per image)");
      auto it = g_clusters.find(clusterKey_);
      if (it == g_clusters.end()) {
        cl = new Cluster;
        cl->key = clusterKey_;
        g_clusters[clusterKey_] = cl;
      } else {
        cl = it->second;
      }
      cl->refs++;
    }
    if (!Connect(cl)) return UnrefCluster(cl);
    Image* im = new Image;
    im->cluster = cl;
    im->key = imageKey_;
    int r = g_api.rados_ioctx_create(cl->rados, pool_.c_str(), &im->io);
    if (r < 0) {
      Fail(-r, "rados_ioctx_create", "pool " + pool_ + ": " + strerror(-r));
      delete im;
      return UnrefCluster(cl);
    }
    if (!ns_.empty()) g_api.rados_ioctx_set_namespace(im->io, ns_.c_str());
    r = g_api.rbd_open(im->io, image_.c_str(), &im->img, snap_.empty() ? nullptr : snap_.c_str());
    if (r < 0) {
      Fail(-r, "rbd_open", "image " + pool_ + "/" + (ns_.empty() ? "" : ns_ + "/") + image_ + (snap_.empty() ? "" : "@" + snap_) + ": " + strerror(-r));
      g_api.rados_ioctx_destroy(im->io);
      delete im;
      return UnrefCluster(cl);
    }
    rbd_image_info_t st{};
    im->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (im->efd < 0) r = -errno, call_ = "eventfd";
    if (r == 0 && (r = g_api.rbd_set_image_notification(im->img, im->efd, EVENT_TYPE_EVENTFD)) < 0) call_ = "rbd_set_image_notification";
    if (r == 0 && (r = g_api.rbd_stat(im->img, &st, sizeof st)) < 0) call_ = "rbd_stat";
    if (r < 0) {
      std::string call = call_;
      Fail(-r, "rbd_open", call + ": " + strerror(-r));
      if (im->efd >= 0) close(im->efd);
      g_api.rbd_close(im->img);
      g_api.rados_ioctx_destroy(im->io);
      delete im;
      return UnrefCluster(cl);
    }
    size_ = st.size;
    objSize_ = st.obj_size;
    order_ = st.order;
    std::lock_guard<std::mutex> g(g_mu);
    im->id = g_nextImage++;
    g_images[im->id] = im;
    id_ = im->id;
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("image", Napi::Number::New(env, id_));
    o.Set("size", Napi::Number::New(env, static_cast<double>(size_)));
    o.Set("objSize", Napi::Number::New(env, static_cast<double>(objSize_)));
    o.Set("order", Napi::Number::New(env, order_));
    o.Set("version", Napi::String::New(env, g_version));
    o.Set("writeZeroes", Napi::Boolean::New(env, g_api.rbd_aio_write_zeroes != nullptr));
    return o;
  }

 private:
  bool Connect(Cluster* cl) {
    std::lock_guard<std::mutex> g(cl->mu);
    if (cl->rados) return true;
    rados_t r = nullptr;
    std::string name = "client." + user_;
    int rc = g_api.rados_create2(&r, clusterName_.c_str(), name.c_str(), 0);
    if (rc < 0) {
      Fail(-rc, "rados_create2");
      return false;
    }
    // No conf: the default search ($CEPH_CONF, /etc/ceph/ceph.conf, ...); its absence is fine with mon_host set.
    rc = g_api.rados_conf_read_file(r, conf_.empty() ? nullptr : conf_.c_str());
    if (rc < 0 && !conf_.empty()) {
      Fail(-rc, "rados_conf_read_file", "conf " + conf_ + ": " + strerror(-rc));
      g_api.rados_shutdown(r);
      return false;
    }
    for (auto& kv : options_) {
      rc = g_api.rados_conf_set(r, kv.first.c_str(), kv.second.c_str());
      if (rc < 0) {
        Fail(-rc, "rados_conf_set", "ceph option " + kv.first + "=" + kv.second + ": " + strerror(-rc));
        g_api.rados_shutdown(r);
        return false;
      }
    }
    rc = g_api.rados_connect(r);
    if (rc < 0) {
      Fail(-rc, "rados_connect", std::string("cannot connect to the cluster: ") + strerror(-rc));
      g_api.rados_shutdown(r);
      return false;
    }
    cl->rados = r;
    return true;
  }

  std::string clusterKey_, clusterName_, user_, conf_, pool_, ns_, image_, snap_, imageKey_;
  std::vector<std::pair<std::string, std::string>> options_;
  uint64_t size_ = 0, objSize_ = 0;
  int order_ = 0;
  uint32_t id_ = 0;
};

static Image* FindImage(uint32_t id) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = g_images.find(id);
  return it == g_images.end() ? nullptr : it->second;
}

static void OnUpdate(void* arg) {
  // librbd thread: only wake the main thread, which re-reads the size.
  Image* im = static_cast<Image*>(arg);
  uint64_t one = 1;
  ssize_t w = write(im->watchFd, &one, sizeof one);
  (void)w;
}

// rbdClose(image) -> Promise<void>: unwatch, wait for what closed channels
// left in flight, rbd_close, drop the cluster reference (rados_shutdown on the last).
class CloseWorker : public PromiseWorker {
 public:
  CloseWorker(Napi::Env env, uint32_t id, double drainMs) : PromiseWorker(env), id_(id), drainMs_(drainMs) {}
  void Execute() override {
    Image* im = FindImage(id_);
    if (!im) return Fail(EBADF, "rbd_close", "rbd image handle " + std::to_string(id_) + " is not open");
    {
      std::lock_guard<std::mutex> g(im->mu);
      for (Chan* c : im->chans)
        if (!c->closed) return Fail(EBUSY, "rbd_close", "rbd image still has open channels");
    }
    if (im->watching) {
      g_api.rbd_update_unwatch(im->img, im->watchHandle);
      im->watching = false;
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(drainMs_));
    while (im->outstanding.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      pollfd p{im->efd, POLLIN, 0};
      if (poll(&p, 1, 100) > 0) {
        uint64_t v;
        ssize_t rd = read(im->efd, &v, sizeof v);
        (void)rd;
      }
      std::lock_guard<std::mutex> g(im->mu);
      DrainImageLocked(im, nullptr);
    }
    g_api.rbd_close(im->img);  // waits for anything still in flight
    g_api.rados_ioctx_destroy(im->io);
    {
      std::lock_guard<std::mutex> g(im->mu);
      for (Chan* c : im->chans) FreeChan(c);
      im->chans.clear();
    }
    {
      std::lock_guard<std::mutex> g(g_mu);
      g_images.erase(id_);
    }
    close(im->efd);
    if (im->watchFd >= 0) close(im->watchFd);
    Cluster* cl = im->cluster;
    delete im;
    UnrefCluster(cl);
  }

 private:
  uint32_t id_;
  double drainMs_;
};

// rbdSize(image) -> Promise<number>; rbdResize(image, size, allowShrink) -> Promise<number>
class SizeWorker : public PromiseWorker {
 public:
  SizeWorker(Napi::Env env, uint32_t id, bool resize, double size, bool shrink)
      : PromiseWorker(env), id_(id), resize_(resize), size_(static_cast<uint64_t>(size)), shrink_(shrink) {}
  void Execute() override {
    Image* im = FindImage(id_);
    if (!im) return Fail(EBADF, "rbd_get_size", "rbd image handle " + std::to_string(id_) + " is not open");
    if (resize_) {
      int r = g_api.rbd_resize2(im->img, size_, shrink_, nullptr, nullptr);
      if (r < 0) return Fail(-r, "rbd_resize2", std::string("resize: ") + strerror(-r));
    }
    int r = g_api.rbd_get_size(im->img, &size_);
    if (r < 0) return Fail(-r, "rbd_get_size");
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(size_)); }

 private:
  uint32_t id_;
  bool resize_;
  uint64_t size_;
  bool shrink_;
};

// rbdWatch(image) -> Promise<fd>: an eventfd written from librbd's thread on
// every header update; rbdUnwatch(image) -> Promise<void>. The fd is closed by rbdClose.
class WatchWorker : public PromiseWorker {
 public:
  WatchWorker(Napi::Env env, uint32_t id, bool on) : PromiseWorker(env), id_(id), on_(on) {}
  void Execute() override {
    Image* im = FindImage(id_);
    if (!im) return Fail(EBADF, "rbd_update_watch", "rbd image handle " + std::to_string(id_) + " is not open");
    if (!on_) {
      if (im->watching) {
        int r = g_api.rbd_update_unwatch(im->img, im->watchHandle);
        im->watching = false;
        if (r < 0) return Fail(-r, "rbd_update_unwatch");
      }
      return;
    }
    if (im->watching) return Fail(EBUSY, "rbd_update_watch", "already watching this image");
    if (im->watchFd < 0) {
      im->watchFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (im->watchFd < 0) return Fail(errno, "eventfd");
    }
    int r = g_api.rbd_update_watch(im->img, &im->watchHandle, OnUpdate, im);
    if (r < 0) return Fail(-r, "rbd_update_watch");
    im->watching = true;
    fd_ = im->watchFd;
  }
  Napi::Value Result(Napi::Env env) override { return on_ ? Napi::Number::New(env, fd_) : env.Undefined(); }

 private:
  uint32_t id_;
  bool on_;
  int fd_ = -1;
};

static bool ArgObject(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() > i && info[i].IsObject()) return true;
  Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be an object").ThrowAsJavaScriptException();
  return false;
}

static bool ArgDouble(const Napi::CallbackInfo& info, size_t i, double* out) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::Number>().DoubleValue();
  return true;
}

static Napi::Value RbdOpen(const Napi::CallbackInfo& info) {
  if (!ArgObject(info, 0) || !ArgObject(info, 1)) return info.Env().Undefined();
  auto* w = new OpenWorker(info.Env(), info[0].As<Napi::Object>(), info[1].As<Napi::Object>());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

static Napi::Value RbdClose(const Napi::CallbackInfo& info) {
  uint32_t id;
  double drainMs;
  if (!ArgUint32(info, 0, &id) || !ArgDouble(info, 1, &drainMs)) return info.Env().Undefined();
  auto* w = new CloseWorker(info.Env(), id, drainMs);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

static Napi::Value RbdSize(const Napi::CallbackInfo& info) {
  uint32_t id;
  if (!ArgUint32(info, 0, &id)) return info.Env().Undefined();
  auto* w = new SizeWorker(info.Env(), id, false, 0, false);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

static Napi::Value RbdResize(const Napi::CallbackInfo& info) {
  uint32_t id;
  double size;
  if (!ArgUint32(info, 0, &id) || !ArgDouble(info, 1, &size)) return info.Env().Undefined();
  if (!(size >= 0 && size <= 9007199254740991.0)) return ThrowErrno(info.Env(), EINVAL, "rbd_resize2");
  auto* w = new SizeWorker(info.Env(), id, true, size, info.Length() > 2 && info[2].ToBoolean());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

static Napi::Value RbdWatch(const Napi::CallbackInfo& info, bool on) {
  uint32_t id;
  if (!ArgUint32(info, 0, &id)) return info.Env().Undefined();
  auto* w = new WatchWorker(info.Env(), id, on);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// rbdVersion() -> "1.16.0"; throws when the library is missing (message names the package).
static Napi::Value RbdVersion(const Napi::CallbackInfo& info) {
  std::string err;
  std::lock_guard<std::mutex> g(g_mu);
  if (!LoadLocked(&err)) {
    Napi::Error e = Napi::Error::New(info.Env(), err);
    e.Set("errno", Napi::Number::New(info.Env(), ENOENT));
    e.Set("syscall", Napi::String::New(info.Env(), "dlopen"));
    e.ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::String::New(info.Env(), g_version);
}

// rbdChannelOpen(image, slots, maxIov) -> {channel, notifyFd, arenaAddr, arenaBytes}.
// Reactor thread, setup (throws). The arena holds each slot's iovec array
// (slot * maxIov * 16); it lives until the channel's last completion, since
// librbd reads through it until then.
static Napi::Value RbdChannelOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id, slots, maxIov;
  if (!ArgUint32(info, 0, &id) || !ArgUint32(info, 1, &slots) || !ArgUint32(info, 2, &maxIov)) return env.Undefined();
  if (slots == 0 || slots > 65536 || maxIov == 0 || maxIov > 1024) return ThrowErrno(env, EINVAL, "rbdChannelOpen");
  Image* im = FindImage(id);
  if (!im) return ThrowErrno(env, EBADF, "rbdChannelOpen");
  Chan* c = new Chan;
  c->im = im;
  c->slots = slots;
  c->arenaBytes = static_cast<size_t>(slots) * maxIov * kIovecBytes;
  c->arena = static_cast<char*>(calloc(1, c->arenaBytes));
  c->q.reserve(4 * static_cast<size_t>(slots));
  c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  c->epfd = epoll_create1(EPOLL_CLOEXEC);
  int err = 0;
  const char* call = "";
  if (!c->arena) err = ENOMEM, call = "calloc";
  else if (c->efd < 0) err = errno, call = "eventfd";
  else if (c->epfd < 0) err = errno, call = "epoll_create1";
  if (!err) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, im->efd, &ev) < 0 || epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->efd, &ev) < 0)
      err = errno, call = "epoll_ctl";
  }
  if (!err) {
    std::lock_guard<std::mutex> g(g_mu);
    uint32_t idx = 0;
    for (; idx < kChanTable; idx++)
      if (!g_chanTable[idx]) break;
    if (idx == kChanTable) {
      err = EMFILE, call = "rbdChannelOpen";
    } else {
      // id = generation * table size + index: a stale id never matches a reused slot.
      c->id = (++g_chanGen % 0xffff + 1) * kChanTable + idx;
      g_chanTable[idx] = c;
    }
  }
  if (err) {
    if (c->efd >= 0) close(c->efd);
    if (c->epfd >= 0) close(c->epfd);
    FreeChan(c);
    return ThrowErrno(env, err, call);
  }
  {
    std::lock_guard<std::mutex> g(im->mu);
    im->chans.push_back(c);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("channel", Napi::Number::New(env, c->id));
  o.Set("notifyFd", Napi::Number::New(env, c->epfd));
  o.Set("arenaAddr", Napi::Number::New(env, static_cast<double>(reinterpret_cast<uintptr_t>(c->arena))));
  o.Set("arenaBytes", Napi::Number::New(env, static_cast<double>(c->arenaBytes)));
  return o;
}

// rbdChannelClose(channel) -> number of I/Os still in flight at librbd (their
// results are dropped; the arena is freed with the last one). Owner thread.
static Napi::Value RbdChannelClose(const Napi::CallbackInfo& info) {
  uint32_t id;
  if (!ArgUint32(info, 0, &id)) return info.Env().Undefined();
  Chan* c = LookupChan(id);
  if (!c) return Napi::Number::New(info.Env(), -EBADF);
  {
    std::lock_guard<std::mutex> g(g_mu);
    g_chanTable[id % kChanTable] = nullptr;
  }
  Image* im = c->im;
  int left;
  {
    std::lock_guard<std::mutex> g(im->mu);
    c->closed = true;
    c->inflight -= static_cast<int>((c->q.size() - c->qhead) / 2);
    c->q.clear();
    c->qhead = 0;
    close(c->epfd);
    close(c->efd);
    left = c->inflight.load();
    if (left == 0) {
      for (size_t k = 0; k < im->chans.size(); k++)
        if (im->chans[k] == c) {
          im->chans.erase(im->chans.begin() + static_cast<long>(k));
          break;
        }
      FreeChan(c);
    }
  }
  return Napi::Number::New(info.Env(), left);
}

enum { OP_READ = 0, OP_WRITE = 1, OP_FLUSH = 2, OP_DISCARD = 3, OP_WRITE_ZEROES = 4 };

// rbdSubmit(channel, op, slot, offset, len, iovAddr, niov, flags) -> 0 or -errno.
// Hot path: no throw, no allocation beyond librbd's completion. iovAddr must be
// this channel's arena (slot * maxIov * 16); flags is zero_flags for WRITE_ZEROES.
static Napi::Value RbdSubmit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 8) return Napi::Number::New(env, -EINVAL);
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  int32_t op = info[1].As<Napi::Number>().Int32Value();
  uint32_t slot = info[2].As<Napi::Number>().Uint32Value();
  double off = info[3].As<Napi::Number>().DoubleValue();
  double len = info[4].As<Napi::Number>().DoubleValue();
  double iovAddr = info[5].As<Napi::Number>().DoubleValue();
  int32_t niov = info[6].As<Napi::Number>().Int32Value();
  int32_t flags = info[7].As<Napi::Number>().Int32Value();
  Chan* c = LookupChan(id);
  if (!c) return Napi::Number::New(env, -EBADF);
  if (slot >= c->slots || !(off >= 0 && off < 9007199254740992.0) || !(len >= 0 && len < 9007199254740992.0))
    return Napi::Number::New(env, -EINVAL);
  const iovec* iov = nullptr;
  if (op == OP_READ || op == OP_WRITE) {
    uintptr_t a = static_cast<uintptr_t>(iovAddr), base = reinterpret_cast<uintptr_t>(c->arena);
    if (niov < 1 || a < base || a + static_cast<size_t>(niov) * kIovecBytes > base + c->arenaBytes)
      return Napi::Number::New(env, -EINVAL);
    iov = reinterpret_cast<const iovec*>(a);
  } else if (op == OP_WRITE_ZEROES && !g_api.rbd_aio_write_zeroes) {
    return Napi::Number::New(env, -EOPNOTSUPP);
  } else if (op < OP_READ || op > OP_WRITE_ZEROES) {
    return Napi::Number::New(env, -EOPNOTSUPP);
  }
  Image* im = c->im;
  rbd_completion_t comp;
  void* arg = reinterpret_cast<void*>(static_cast<uintptr_t>((static_cast<uint64_t>(id) << 32) | slot));
  int r = g_api.rbd_aio_create_completion(arg, nullptr, &comp);
  if (r < 0) return Napi::Number::New(env, r);
  // Count before submitting: another reactor may reap the completion before the call returns.
  c->inflight++;
  im->outstanding++;
  uint64_t o = static_cast<uint64_t>(off), l = static_cast<uint64_t>(len);
  switch (op) {
    case OP_READ: r = g_api.rbd_aio_readv(im->img, iov, niov, o, comp); break;
    case OP_WRITE: r = g_api.rbd_aio_writev(im->img, iov, niov, o, comp); break;
    case OP_FLUSH: r = g_api.rbd_aio_flush(im->img, comp); break;
    case OP_DISCARD: r = g_api.rbd_aio_discard(im->img, o, l, comp); break;
    default: r = g_api.rbd_aio_write_zeroes(im->img, o, static_cast<size_t>(l), comp, flags, 0); break;
  }
  if (r < 0) {
    c->inflight--;
    im->outstanding--;
    g_api.rbd_aio_release(comp);
    return Napi::Number::New(env, r);
  }
  return Napi::Number::New(env, 0);
}

// rbdReap(channel, out: Int32Array) -> pairs written (slot, ret); ret is
// librbd's return value (bytes read for READ, 0 or -errno). Hot path: no throw.
static Napi::Value RbdReap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    return Napi::Number::New(env, -EINVAL);
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  Napi::Int32Array out = info[1].As<Napi::Int32Array>();
  Chan* c = LookupChan(id);
  if (!c) return Napi::Number::New(env, -EBADF);
  Image* im = c->im;
  size_t max = out.ElementLength() / 2;
  int32_t* dst = out.Data();
  size_t n = 0;
  // Wait for the lock rather than try it: rbdClearNotify may have queued this
  // channel's completions without signalling it (this reap was to take them),
  // and a reactor that found the lock busy on every pass before it slept
  // would leave them there. Holders only move completions between queues.
  std::lock_guard<std::mutex> g(im->mu);
  DrainImageLocked(im, c);
  size_t avail = (c->q.size() - c->qhead) / 2;
  n = avail < max ? avail : max;
  memcpy(dst, c->q.data() + c->qhead, n * 2 * sizeof(int32_t));
  c->qhead += n * 2;
  if (c->qhead == c->q.size()) {
    c->q.clear();
    c->qhead = 0;
  }
  // What `out` could not hold stays queued: the reactor passes again after a
  // pass that did work, and reaps it then.
  c->inflight -= static_cast<int>(n);
  return Napi::Number::New(env, static_cast<double>(n));
}

// rbdClearNotify(channel): after notifyFd woke the reactor, zero the image's
// and the channel's eventfds and queue what they announced; the reactor's next
// pass reaps this channel's share.
static Napi::Value RbdClearNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return Napi::Number::New(env, -EINVAL);
  Chan* c = LookupChan(info[0].As<Napi::Number>().Uint32Value());
  if (!c) return Napi::Number::New(env, -EBADF);
  Image* im = c->im;
  uint64_t v;
  std::lock_guard<std::mutex> g(im->mu);
  ssize_t rd = read(im->efd, &v, sizeof v);  // EAGAIN: another reactor cleared it first
  // Drain what that read announced, now: the completions may be another
  // channel's, whose reactor may have gone back to sleep once the image
  // eventfd was zeroed, and this channel may owe librbd nothing (so its next
  // pass does not reap). Routing them signals their owners.
  DrainImageLocked(im, c);
  if (c->signalled) {
    rd = read(c->efd, &v, sizeof v);
    c->signalled = false;
  }
  (void)rd;
  return Napi::Number::New(env, 0);
}

void InitRbd(Napi::Env env, Napi::Object exports) {
  exports.Set("rbdVersion", Napi::Function::New(env, RbdVersion, "rbdVersion"));
  exports.Set("rbdOpen", Napi::Function::New(env, RbdOpen, "rbdOpen"));
  exports.Set("rbdClose", Napi::Function::New(env, RbdClose, "rbdClose"));
  exports.Set("rbdSize", Napi::Function::New(env, RbdSize, "rbdSize"));
  exports.Set("rbdResize", Napi::Function::New(env, RbdResize, "rbdResize"));
  exports.Set("rbdWatch", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return RbdWatch(i, true); }, "rbdWatch"));
  exports.Set("rbdUnwatch", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return RbdWatch(i, false); }, "rbdUnwatch"));
  exports.Set("rbdChannelOpen", Napi::Function::New(env, RbdChannelOpen, "rbdChannelOpen"));
  exports.Set("rbdChannelClose", Napi::Function::New(env, RbdChannelClose, "rbdChannelClose"));
  exports.Set("rbdSubmit", Napi::Function::New(env, RbdSubmit, "rbdSubmit"));
  exports.Set("rbdReap", Napi::Function::New(env, RbdReap, "rbdReap"));
  exports.Set("rbdClearNotify", Napi::Function::New(env, RbdClearNotify, "rbdClearNotify"));
}

}  // namespace vdx
