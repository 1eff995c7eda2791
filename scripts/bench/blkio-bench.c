// A small libblkio load generator for vdx's benchmark: 4 KiB random reads or
// writes at a fixed queue depth over one or more virtqueues, and reports IOPS,
// latency percentiles and its own CPU time as one JSON line. MODE "poll" (the
// default) spins on the rings, so the client, not interrupts, sets the pace;
// "wait" sleeps until the daemon signals a completion, as an interrupt-driven
// guest does (one queue: blocking blkioq_do_io; more: poll() on their
// completion fds).
//
// libblkio is loaded with dlopen so this builds with the host's compiler and
// runs inside the Debian 13 userland, where libblkio lives.
// "kicks" is the write syscalls it made while measuring (/proc/self/io): with
// nothing else written, those are its eventfd kicks to the daemon. rw "idle"
// connects, starts the queues and sleeps for the given seconds, for the
// daemon's CPU with a client connected and no I/O.
//
//   blkio-bench DRIVER PATH rw(read|write|idle) qd queues seconds size_bytes [poll|wait]
#define _GNU_SOURCE
#include <dlfcn.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct blkio;
struct blkioq;
struct blkio_mem_region {
  void *addr;
  size_t len;
  uint64_t iova;
  int64_t fd_offset;
  int fd;
  uint32_t flags;
};
struct blkio_completion {
  void *user_data;
  const char *error_msg;
  int ret;
  uint8_t reserved_[12];
};

#define FN(ret, name, args) static ret(*name) args
FN(int, blkio_create, (const char *, struct blkio **));
FN(int, blkio_connect, (struct blkio *));
FN(int, blkio_start, (struct blkio *));
FN(void, blkio_destroy, (struct blkio **));
FN(int, blkio_set_str, (struct blkio *, const char *, const char *));
FN(int, blkio_set_int, (struct blkio *, const char *, int));
FN(int, blkio_set_bool, (struct blkio *, const char *, _Bool));
FN(int, blkio_alloc_mem_region, (struct blkio *, struct blkio_mem_region *, size_t));
FN(int, blkio_map_mem_region, (struct blkio *, const struct blkio_mem_region *));
FN(struct blkioq *, blkio_get_queue, (struct blkio *, int));
FN(void, blkioq_read, (struct blkioq *, uint64_t, void *, size_t, void *, uint32_t));
FN(void, blkioq_write, (struct blkioq *, uint64_t, const void *, size_t, void *, uint32_t));
FN(int, blkioq_do_io, (struct blkioq *, struct blkio_completion *, int, int, struct timespec *));
FN(int, blkioq_get_completion_fd, (struct blkioq *));
FN(void, blkioq_set_completion_fd_enabled, (struct blkioq *, _Bool));
FN(const char *, blkio_get_error_msg, (void));

static void die(const char *what, int rc) {
  fprintf(stderr, "blkio-bench: %s failed (%d): %s\n", what, rc, blkio_get_error_msg ? blkio_get_error_msg() : "");
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t xorshift(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/** A counter of /proc/self/io ("syscr", "syscw"); -1 where the kernel keeps no I/O accounting. */
static long long proc_io(const char *key) {
  FILE *f = fopen("/proc/self/io", "r");
  if (!f) return -1;
  char k[32];
  long long v, found = -1;
  while (fscanf(f, "%31[^:]: %lld\n", k, &v) == 2)
    if (strcmp(k, key) == 0) found = v;
  fclose(f);
  return found;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

#define BS 4096
#define MAX_LAT (1 << 24)

int main(int argc, char **argv) {
  if (argc != 8 && argc != 9) {
    fprintf(stderr, "usage: blkio-bench DRIVER PATH read|write|idle QD QUEUES SECONDS SIZE_BYTES [poll|wait]\n");
    return 2;
  }
  int wait = argc == 9 && strcmp(argv[8], "wait") == 0;
  if (argc == 9 && !wait && strcmp(argv[8], "poll") != 0) {
    fprintf(stderr, "blkio-bench: mode '%s': use poll or wait\n", argv[8]);
    return 2;
  }
  const char *driver = argv[1], *path = argv[2];
  int write = strcmp(argv[3], "write") == 0, idle = strcmp(argv[3], "idle") == 0;
  if (!write && !idle && strcmp(argv[3], "read") != 0) {
    fprintf(stderr, "blkio-bench: rw '%s': use read, write or idle\n", argv[3]);
    return 2;
  }
  int qd = atoi(argv[4]), nq = atoi(argv[5]);
  double seconds = atof(argv[6]);
  uint64_t blocks = strtoull(argv[7], NULL, 10) / BS;
  if (qd < 1 || nq < 1 || blocks == 0) return 2;

  void *lib = dlopen("libblkio.so.1", RTLD_NOW);
  if (!lib) {
    fprintf(stderr, "blkio-bench: %s\n", dlerror());
    return 1;
  }
#define LOAD(name)                                          \
  *(void **)(&name) = dlsym(lib, #name);                    \
  if (!name) {                                              \
    fprintf(stderr, "blkio-bench: no symbol %s\n", #name); \
    return 1;                                               \
  }
  LOAD(blkio_create) LOAD(blkio_connect) LOAD(blkio_start) LOAD(blkio_destroy) LOAD(blkio_set_str)
  LOAD(blkio_set_int) LOAD(blkio_set_bool) LOAD(blkio_alloc_mem_region) LOAD(blkio_map_mem_region)
  LOAD(blkio_get_queue) LOAD(blkioq_read) LOAD(blkioq_write) LOAD(blkioq_do_io) LOAD(blkio_get_error_msg)
  LOAD(blkioq_get_completion_fd) LOAD(blkioq_set_completion_fd_enabled)

  struct blkio *b;
  int rc;
  if ((rc = blkio_create(driver, &b)) < 0) die("blkio_create", rc);
  if ((rc = blkio_set_str(b, "path", path)) < 0) die("set path", rc);
  if ((rc = blkio_connect(b)) < 0) die("blkio_connect", rc);
  if ((rc = blkio_set_int(b, "num-queues", nq)) < 0) die("set num-queues", rc);
  if ((rc = blkio_start(b)) < 0) die("blkio_start", rc);
  struct blkio_mem_region region;
  size_t slots = (size_t)qd * nq;
  if ((rc = blkio_alloc_mem_region(b, &region, slots * BS)) < 0) die("alloc mem region", rc);
  if ((rc = blkio_map_mem_region(b, &region)) < 0) die("map mem region", rc);
  memset(region.addr, 0x5a, slots * BS);
  if (idle) {
    // "ready" and "slept" bracket the idle time, for whoever measures the daemon meanwhile.
    fprintf(stderr, "ready\n");
    struct timespec nap = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&nap, NULL);
    fprintf(stderr, "slept\n");
    printf("{\"ios\":0,\"errors\":0,\"seconds\":%.3f,\"iops\":0,\"p50_us\":0,\"p99_us\":0,\"client_cpu\":0,\"kicks\":0}\n", seconds);
    blkio_destroy(&b);
    return 0;
  }

  struct blkioq **qs = calloc(nq, sizeof *qs);
  for (int i = 0; i < nq; i++) qs[i] = blkio_get_queue(b, i);
  struct pollfd *pfds = calloc(nq, sizeof *pfds);
  if (wait && nq > 1) {
    for (int i = 0; i < nq; i++) {
      pfds[i].fd = blkioq_get_completion_fd(qs[i]);
      pfds[i].events = POLLIN;
      blkioq_set_completion_fd_enabled(qs[i], 1);
    }
  }
  uint64_t *started = calloc(slots, sizeof *started);
  uint32_t *lat = malloc(sizeof(uint32_t) * MAX_LAT);
  size_t nlat = 0;
  struct blkio_completion *comps = calloc(qd, sizeof *comps);

  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  long long w0 = proc_io("syscw");
  uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9);
  // Prime every queue to its depth; slot s belongs to queue s / qd.
  for (size_t s = 0; s < slots; s++) {
    struct blkioq *q = qs[s / qd];
    uint64_t off = (xorshift() % blocks) * BS;
    started[s] = now_ns();
    if (write) blkioq_write(q, off, (char *)region.addr + s * BS, BS, (void *)(uintptr_t)s, 0);
    else blkioq_read(q, off, (char *)region.addr + s * BS, BS, (void *)(uintptr_t)s, 0);
  }
  uint64_t done = 0, errors = 0, t = t0;
  int stopping = 0;
  size_t outstanding = slots;
  while (outstanding > 0) {
    int got = 0;
    for (int i = 0; i < nq; i++) {
      int n = blkioq_do_io(qs[i], comps, wait && nq == 1 ? 1 : 0, qd, NULL);
      if (n < 0) die("blkioq_do_io", n);
      got += n;
      if (n == 0) continue;
      t = now_ns();
      for (int k = 0; k < n; k++) {
        size_t s = (size_t)(uintptr_t)comps[k].user_data;
        if (comps[k].ret != 0) errors++;
        if (stopping) {  // draining: not counted
          outstanding--;
          continue;
        }
        if (nlat < MAX_LAT) lat[nlat++] = (uint32_t)((t - started[s]) / 10);  // units of 10 ns
        done++;
        uint64_t off = (xorshift() % blocks) * BS;
        started[s] = t;
        if (write) blkioq_write(qs[i], off, (char *)region.addr + s * BS, BS, (void *)(uintptr_t)s, 0);
        else blkioq_read(qs[i], off, (char *)region.addr + s * BS, BS, (void *)(uintptr_t)s, 0);
      }
    }
    if (wait && nq > 1 && got == 0) {
      // Nothing completed on any queue: sleep until one signals, and consume
      // each signal before the next blkioq_do_io looks at its ring.
      if (poll(pfds, nq, -1) < 0) die("poll", -1);
      for (int i = 0; i < nq; i++) {
        uint64_t v;
        if ((pfds[i].revents & POLLIN) && read(pfds[i].fd, &v, sizeof v) < 0) die("read completion fd", -1);
      }
      t = now_ns();
    }
    if (!stopping && t >= end) {
      stopping = 1;
      end = t;
    }
  }
  getrusage(RUSAGE_SELF, &ru1);
  long long w1 = proc_io("syscw");
  double wall = (end - t0) / 1e9;
  double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
               (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
  qsort(lat, nlat, sizeof *lat, cmp_u32);
  double p50 = nlat ? lat[nlat / 2] / 100.0 : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] / 100.0 : 0;
  printf("{\"ios\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"iops\":%.0f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"client_cpu\":%.3f,\"kicks\":%lld}\n",
         (unsigned long long)done, (unsigned long long)errors, wall, done / wall, p50, p99, cpu / wall, w0 < 0 ? -1 : w1 - w0);
  blkio_destroy(&b);
  return errors ? 1 : 0;
}
