// rbd bdev: a Ceph RBD image through librbd (loaded at run time by
// native/rbd.cc). One rados connection per cluster and one image handle per
// bdev, process-wide and shared by every reactor; each reactor's channel
// submits librbd aio calls and reaps completions from librbd's event queue
// (demultiplexed per channel in native), sleeping on its notifyFd in between.
//
// Timeouts (backends.md §5.4): librados never times out by default, so a dead
// cluster would hang a guest forever. vdx sets client_mount_timeout,
// rados_mon_op_timeout and rados_osd_op_timeout (30 s each by default); the OSD
// op timeout stays above osd_heartbeat_grace + osd_heartbeat_interval (26 s),
// so an OSD failover is ridden out, and I/O to a cluster that stays away fails
// with ETIMEDOUT (the guest sees an I/O error) after that time.
//
// Cache (backends.md §5.2): cache=none (default) turns librbd's cache off, so a
// write completes only when the OSDs have it. writearound/writeback complete
// writes early and promise durability only at FLUSH, which is always offered
// and passed through to rbd_aio_flush.
import { availableParallelism } from 'node:os';
import { loadNative, type FdWatcher } from '../native/index.js';
import { loadRbd, RBD_OP, RBD_WRITE_ZEROES_FLAG_THICK_PROVISION, type RbdError, type RbdShim } from '../native/rbd.js';
import { IoFifo } from './deferred.js';
import { IOVEC_BYTES, putIovecs } from './iovec.js';
import { checkKeys, parseBlockSize, parseBool, parseSize } from './spec.js';
import { type BdevDesc, type BdevIo, type BdevModule, type Channel, IoOp, MAX_IOV } from './types.js';

const SLOTS = 256;
const EIO = 5;
const EROFS = 30;
const EOPNOTSUPP = 95;

export const RBD_DEFAULT_TIMEOUT_S = 30;
/**
 * librados io_context_pool threads per cluster connection (librados's default
 * is 2; librbd's own finisher threads come on top). They run librbd's request
 * state machines and queue completions for the reactors. On two CPUs one
 * thread does more, because it saves hand-offs between threads that share the
 * CPUs with the OSD and the client. rbd randread QD32, 5 alternating rounds,
 * medians: 1.12-1.23x QSD with one thread, 0.95-1.04x with two. Hosts with
 * more CPUs keep librados's default.
 */
const LIBRADOS_THREADS = availableParallelism() <= 2 ? 1 : 2;

class RbdChannel implements Channel {
  /** librbd's threads copy read data into guest memory */
  readonly copiesLater = true;
  readonly notifyFd: number;
  private readonly rbd: RbdShim;
  private readonly channel: number;
  private readonly arena: ArrayBuffer;
  private readonly arenaDv: DataView;
  private readonly arenaAddr: number;
  private readonly slotIo: (BdevIo | undefined)[] = new Array<BdevIo | undefined>(SLOTS).fill(undefined);
  private readonly freeSlots = new Int32Array(SLOTS);
  private nfree = SLOTS;
  private readonly backlog = new IoFifo(256);
  /** requests failed before reaching librbd, completed from the next poll() */
  private readonly backlogDone = new IoFifo(16);
  private readonly reaped = new Int32Array(2 * SLOTS);
  private inflightCount = 0;
  private atLibrbd = 0;
  private closed = false;

  constructor(
    image: number,
    private readonly readonly: boolean,
  ) {
    this.rbd = loadRbd();
    const h = this.rbd.rbdChannelOpen(image, SLOTS, MAX_IOV);
    this.channel = h.channel;
    this.notifyFd = h.notifyFd;
    this.arenaAddr = h.arenaAddr;
    this.arena = loadNative().viewAddress(h.arenaAddr, h.arenaBytes);
    this.arenaDv = new DataView(this.arena);
    for (let i = 0; i < SLOTS; i++) this.freeSlots[i] = SLOTS - 1 - i;
  }

  submit(io: BdevIo): number {
    this.inflightCount++;
    if (this.backlog.size() > 0 || !this.start(io)) this.backlog.push(io);
    return 0;
  }

  /** Hand io to librbd; false when no slot is free. */
  private start(io: BdevIo): boolean {
    if (this.nfree === 0) return false;
    if (this.readonly && io.op !== IoOp.READ && io.op !== IoOp.FLUSH) return this.failEarly(io, -EROFS);
    const slot = this.freeSlots[--this.nfree]!;
    let rc: number;
    switch (io.op) {
      case IoOp.READ:
      case IoOp.WRITE: {
        const at0 = slot * MAX_IOV * IOVEC_BYTES;
        putIovecs(this.arenaDv, at0, io.iov, io.niov);
        const op = io.op === IoOp.READ ? RBD_OP.READ : RBD_OP.WRITE;
        rc = this.rbd.rbdSubmit(this.channel, op, slot, io.offsetBytes, io.lenBytes, this.arenaAddr + at0, io.niov, 0);
        break;
      }
      case IoOp.FLUSH:
        rc = this.rbd.rbdSubmit(this.channel, RBD_OP.FLUSH, slot, 0, 0, 0, 0, 0);
        break;
      case IoOp.DISCARD:
        rc = this.rbd.rbdSubmit(this.channel, RBD_OP.DISCARD, slot, io.offsetBytes, io.lenBytes, 0, 0, 0);
        break;
      case IoOp.WRITE_ZEROES:
        // Without the driver's unmap permission the zeroes must stay allocated (thick).
        rc = this.rbd.rbdSubmit(this.channel, RBD_OP.WRITE_ZEROES, slot, io.offsetBytes, io.lenBytes, 0, 0, io.unmap ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION);
        break;
      default:
        rc = -EOPNOTSUPP;
    }
    if (rc < 0) {
      this.freeSlots[this.nfree++] = slot;
      return this.failEarly(io, rc);
    }
    this.slotIo[slot] = io;
    this.atLibrbd++;
    return true;
  }

  private failEarly(io: BdevIo, status: number): true {
    io.status = status;
    this.backlogDone.push(io);
    return true;
  }

  private complete(slot: number, ret: number): void {
    const io = slot >= 0 && slot < SLOTS ? this.slotIo[slot] : undefined;
    if (io === undefined) return; // not ours: ignore rather than trust
    this.slotIo[slot] = undefined;
    this.freeSlots[this.nfree++] = slot;
    this.atLibrbd--;
    this.inflightCount--;
    if (ret < 0) io.status = ret;
    // A read returns its byte count. librbd clips only reads past the image's
    // end (it shrank under us); fail those rather than zero-pad as QEMU does,
    // since the bytes are gone, not zero (SPDK fails them too).
    else if (io.op === IoOp.READ && ret !== io.lenBytes) io.status = -EIO;
    else io.status = 0;
    io.done(io);
  }

  poll(): number {
    let n = 0;
    // Nothing of ours at librbd: nothing to reap (another channel's reap hands us ours).
    const got = this.atLibrbd > 0 ? this.rbd.rbdReap(this.channel, this.reaped) : 0;
    const r = this.reaped;
    for (let i = 0; i < got; i++) this.complete(r[2 * i]!, r[2 * i + 1]!);
    if (got > 0) n += got;
    for (let io = this.backlogDone.shift(); io !== undefined; io = this.backlogDone.shift()) {
      this.inflightCount--;
      io.done(io);
      n++;
    }
    while (this.backlog.size() > 0 && this.nfree > 0) this.start(this.backlog.shift()!);
    return n;
  }

  inflight(): number {
    return this.inflightCount;
  }

  kernelInflight(): number {
    return this.atLibrbd;
  }

  // The reactor polls every channel after a wake-up, and that pass reaps what
  // the eventfds announced.
  clearNotify(): void {
    this.rbd.rbdClearNotify(this.channel);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    loadNative().detach(this.arena);
    this.rbd.rbdChannelClose(this.channel);
  }
}

const NAME_RE = /^[A-Za-z0-9_.\-+=~]+$/;
const MON_HOST_RE = /^[A-Za-z0-9_.:[\]\-;\s]+$/;

function parseName(key: string, v: string | undefined, dflt: string): string {
  if (v === undefined || v === '') return dflt;
  if (!NAME_RE.test(v)) throw new Error(`rbd: ${key}=${v}: letters, digits and . _ - + = ~ only (no / or @: name the pool, namespace, image and snapshot with their own keys)`);
  return v;
}

function parseSeconds(key: string, v: string | undefined): string {
  if (v === undefined || v === '') return String(RBD_DEFAULT_TIMEOUT_S);
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 3600)
    throw new Error(`rbd: ${key}=${v}: whole seconds from 1 to 3600 (default ${RBD_DEFAULT_TIMEOUT_S}); librados' 0 (wait forever) is not offered`);
  return String(Number(v));
}

const CACHE_MODES = ['none', 'writearound', 'writeback'];

/** The rados_conf_set pairs a normalized spec asks for, in order. */
export function rbdCephOptions(spec: Record<string, string>): [string, string][] {
  const o: [string, string][] = [
    ['client_mount_timeout', spec['connect-timeout']!],
    ['rados_mon_op_timeout', spec['mon-op-timeout']!],
    ['rados_osd_op_timeout', spec['osd-op-timeout']!],
    // Node owns the process's signals; librados must not install its own.
    ['fatal_signal_handlers', 'false'],
    ['librados_thread_count', String(LIBRADOS_THREADS)],
  ];
  if (spec.cache === 'none') o.push(['rbd_cache', 'false']);
  else o.push(['rbd_cache', 'true'], ['rbd_cache_policy', spec.cache!], ['rbd_cache_writethrough_until_flush', 'true']);
  if (spec['mon-host']) o.push(['mon_host', spec['mon-host']]);
  if (spec['key-file']) o.push(['keyring', spec['key-file']]);
  return o;
}

/** Spec keys that decide the rados connection: bdevs equal in these share one. */
const CLUSTER_KEYS = ['cluster', 'conf', 'user', 'key-file', 'mon-host', 'connect-timeout', 'mon-op-timeout', 'osd-op-timeout', 'cache'] as const;

interface WatchState {
  watcher?: FdWatcher;
  /** the second read of the size after a burst of header updates */
  settle?: NodeJS.Timeout;
  stopped: boolean;
  /** the rbdWatch/rbdUnwatch in flight, so destroy never races it */
  pending: Promise<unknown>;
}
const watches = new Map<number, WatchState>();
const SETTLE_MS = 1000;

function stopWatch(st: WatchState): void {
  st.stopped = true;
  if (st.settle) clearTimeout(st.settle);
  st.settle = undefined;
  st.watcher?.close();
  st.watcher = undefined;
}

function rbdFail(desc: { info: { name: string } } | string, e: unknown): Error {
  const name = typeof desc === 'string' ? desc : desc.info.name;
  const errno = (e as RbdError).errno;
  // The errno travels on: the registry reports a cluster's refusal as -errno, not as a bad parameter.
  return Object.assign(new Error(`rbd bdev ${name}: ${(e as Error).message}`, { cause: e as RbdError }), typeof errno === 'number' ? { errno } : {});
}

/**
 * Images open in this process, by identity (cluster, monitors, pool,
 * namespace, image, snapshot), reserved before the open starts so two creates
 * racing for one image cannot both open it: two handles would take the
 * exclusive lock from each other on every write.
 */
const openImages = new Map<string, string>();

function imageIdentity(spec: Record<string, string>): string {
  return JSON.stringify([spec.cluster, spec.conf, spec['mon-host'], spec.pool, spec.namespace, spec.image, spec.snapshot]);
}

/**
 * Control calls on one image handle (size, resize, close) run one at a time:
 * librbd's handle must not be closed under a resize still running on
 * another libuv thread.
 */
const handleOps = new Map<number, Promise<unknown>>();

function onHandle<T>(handle: number, op: () => Promise<T>): Promise<T> {
  const prev = handleOps.get(handle) ?? Promise.resolve();
  const next = prev.catch(() => undefined).then(op);
  handleOps.set(handle, next);
  return next;
}

export const rbdBdev: BdevModule = {
  type: 'rbd',
  keys: {
    name: 'bdev name (required)',
    pool: 'RADOS pool (default rbd)',
    image: 'RBD image name (required)',
    namespace: 'RADOS namespace in the pool (default none)',
    snapshot: 'open this snapshot of the image; read-only',
    conf: 'ceph.conf path (default: librados search, $CEPH_CONF then /etc/ceph/ceph.conf)',
    user: 'Ceph id without "client." (default admin)',
    'key-file': 'keyring file holding the user\'s key (default: the keyring ceph.conf names)',
    'mon-host': 'monitor addresses, e.g. 127.0.0.1:6789 or [v2:10.0.0.1:3300] (separate several with ;)',
    cluster: 'cluster name (default ceph)',
    cache: 'librbd cache: none (default; a write completes when the OSDs have it), writearound or writeback (writes complete early, durable at FLUSH)',
    'osd-op-timeout': `seconds an OSD operation may take before the I/O fails with ETIMEDOUT (default ${RBD_DEFAULT_TIMEOUT_S}; keep above 26, the OSD heartbeat grace + interval)`,
    'mon-op-timeout': `seconds a monitor operation may take (default ${RBD_DEFAULT_TIMEOUT_S})`,
    'connect-timeout': `seconds to reach the cluster at create (client_mount_timeout; default ${RBD_DEFAULT_TIMEOUT_S})`,
    readonly: 'on: refuse writes (default off; on with snapshot=)',
    'block-size': 'logical block size: 512 or 4096 (default 512)',
  },
  normalize(spec) {
    checkKeys('rbd', spec, rbdBdev.keys, ['name', 'image']);
    const snapshot = spec.snapshot ? parseName('snapshot', spec.snapshot, '') : '';
    const ro = parseBool('readonly', spec.readonly, snapshot !== '');
    if (snapshot && !ro) throw new Error(`rbd: snapshot=${snapshot} is read-only; drop readonly=${spec.readonly} or set readonly=on`);
    const user = spec.user ?? 'admin';
    if (user.startsWith('client.')) throw new Error(`rbd: user=${user}: give the Ceph id without "client." (user=${user.slice(7)})`);
    parseName('user', user, 'admin');
    const cache = spec.cache ?? 'none';
    if (!CACHE_MODES.includes(cache)) throw new Error(`rbd: cache=${cache}: must be none, writearound or writeback`);
    const monHost = spec['mon-host'] ?? '';
    if (monHost && !MON_HOST_RE.test(monHost)) throw new Error(`rbd: mon-host=${monHost}: addresses like 127.0.0.1:6789 or [v2:127.0.0.1:3300], separated by ;`);
    for (const k of ['conf', 'key-file'] as const) {
      const v = spec[k];
      if (v !== undefined && v !== '' && !v.startsWith('/')) throw new Error(`rbd: ${k}=${v}: must be an absolute path`);
    }
    return {
      name: spec.name!,
      pool: parseName('pool', spec.pool, 'rbd'),
      image: parseName('image', spec.image, ''),
      namespace: parseName('namespace', spec.namespace, ''),
      snapshot,
      conf: spec.conf ?? '',
      user,
      'key-file': spec['key-file'] ?? '',
      'mon-host': monHost,
      cluster: parseName('cluster', spec.cluster, 'ceph'),
      cache,
      'osd-op-timeout': parseSeconds('osd-op-timeout', spec['osd-op-timeout']),
      'mon-op-timeout': parseSeconds('mon-op-timeout', spec['mon-op-timeout']),
      'connect-timeout': parseSeconds('connect-timeout', spec['connect-timeout']),
      readonly: ro ? 'on' : 'off',
      'block-size': String(parseBlockSize(spec['block-size'])),
    };
  },
  async create(spec): Promise<BdevDesc> {
    const rbd = loadRbd();
    const clusterKey = JSON.stringify(CLUSTER_KEYS.map((k) => spec[k] ?? ''));
    const ref = { pool: spec.pool!, namespace: spec.namespace!, image: spec.image!, snapshot: spec.snapshot! };
    const identity = imageIdentity(spec);
    const holder = openImages.get(identity);
    if (holder !== undefined) {
      throw Object.assign(new Error(`rbd bdev ${spec.name}: image ${ref.pool}/${ref.image} is already open as bdev ${holder}; export that bdev again instead`), { errno: 16 });
    }
    openImages.set(identity, spec.name!);
    let opened;
    try {
      opened = await rbd.rbdOpen(
        { clusterKey, cluster: spec.cluster!, user: spec.user!, conf: spec.conf!, options: rbdCephOptions(spec) },
        { ...ref, imageKey: identity },
      );
    } catch (e) {
      openImages.delete(identity);
      throw rbdFail(spec.name!, e);
    }
    const blockSize = Number(spec['block-size']);
    const readonly = spec.readonly === 'on';
    if (opened.size < blockSize) {
      await rbd.rbdClose(opened.image, 0).catch(() => undefined);
      openImages.delete(identity);
      throw new Error(`rbd bdev ${spec.name}: image ${ref.pool}/${ref.image} (${opened.size} bytes) is smaller than one ${blockSize}-byte block`);
    }
    return {
      info: {
        name: spec.name!,
        type: 'rbd',
        blockSize,
        // A trailing partial block is not addressable.
        sizeBytes: opened.size - (opened.size % blockSize),
        readonly,
        caps: { flush: true, discard: !readonly, writeZeroes: !readonly && opened.writeZeroes },
        maxDiscardBytes: 1 << 30,
      },
      params: {
        handle: opened.image,
        identity,
        pool: ref.pool,
        image: ref.image,
        namespace: ref.namespace,
        snapshot: ref.snapshot,
        conf: spec.conf!,
        user: spec.user!,
        keyFile: spec['key-file']!,
        monHost: spec['mon-host']!,
        cluster: spec.cluster!,
        cache: spec.cache!,
        osdOpTimeout: Number(spec['osd-op-timeout']),
        monOpTimeout: Number(spec['mon-op-timeout']),
        connectTimeout: Number(spec['connect-timeout']),
        objectSize: opened.objSize,
        librbd: opened.version,
      },
    };
  },
  open(desc): Channel {
    return new RbdChannel(desc.params.handle as number, desc.info.readonly);
  },
  async resize(desc, size): Promise<number> {
    const rbd = loadRbd();
    const handle = desc.params.handle as number;
    let bytes: number;
    try {
      if (size !== undefined) {
        if (desc.info.readonly) throw new Error(`image ${desc.params.pool}/${desc.params.image} is open read-only`);
        const want = parseSize('size', size, desc.info.blockSize);
        // As SPDK's bdev_rbd_resize: a typo must not cut data away under a running guest.
        if (want < desc.info.sizeBytes) {
          throw new Error(`size=${size} is smaller than the image (${desc.info.sizeBytes} bytes); vdx only grows images (shrink it yourself with rbd resize --allow-shrink, then resize without a size)`);
        }
        bytes = await onHandle(handle, () => rbd.rbdResize(handle, want, false));
      } else {
        bytes = await onHandle(handle, () => rbd.rbdSize(handle));
      }
    } catch (e) {
      throw rbdFail(desc, e);
    }
    desc.info.sizeBytes = bytes - (bytes % desc.info.blockSize);
    return desc.info.sizeBytes;
  },
  watch(desc, changed, unwatched): () => void {
    const rbd = loadRbd();
    const handle = desc.params.handle as number;
    if (watches.has(handle)) throw new Error(`rbd bdev ${desc.info.name}: already watched`);
    const st: WatchState = { stopped: false, pending: Promise.resolve() };
    watches.set(handle, st);
    st.pending = rbd.rbdWatch(handle).then(
      (fd) => {
        if (st.stopped) return rbd.rbdUnwatch(handle);
        const n = loadNative();
        st.watcher = new n.FdWatcher(fd);
        st.watcher.start(true, false, () => {
          // Coalesce: one re-read covers every update counted so far.
          if (n.eventfdRead(fd) <= 0 || st.stopped) return;
          changed();
          // And one more once the updates have settled: a read racing librbd's
          // refresh of the header must not be the last word on the size.
          if (st.settle) clearTimeout(st.settle);
          st.settle = setTimeout(() => {
            st.settle = undefined;
            if (!st.stopped) changed();
          }, SETTLE_MS);
          st.settle.unref();
        });
        return undefined;
      },
      (e: Error) => unwatched(`rbd_update_watch on ${desc.params.pool}/${desc.params.image}: ${e.message}`),
    );
    return () => {
      if (st.stopped) return;
      stopWatch(st);
      st.pending = st.pending.then(() => rbd.rbdUnwatch(handle)).catch(() => undefined);
    };
  },
  describe: (desc) => {
    const p = desc.params;
    return {
      productName: 'Ceph Rbd Disk',
      driverSpecific: {
        rbd: {
          pool_name: p.pool,
          rbd_name: p.image,
          ...(p.namespace ? { namespace_name: p.namespace } : {}),
          ...(p.snapshot ? { snapshot_name: p.snapshot } : {}),
          user_id: p.user,
          cluster_name: p.cluster,
          ...(p.conf ? { config_file: p.conf } : {}),
          ...(p.keyFile ? { key_file: p.keyFile } : {}),
          ...(p.monHost ? { mon_host: p.monHost } : {}),
          cache: p.cache,
          osd_op_timeout: p.osdOpTimeout,
          mon_op_timeout: p.monOpTimeout,
          connect_timeout: p.connectTimeout,
          object_size: p.objectSize,
          librbd_version: p.librbd,
          read_only: desc.info.readonly,
        },
      },
    };
  },
  async destroy(desc): Promise<void> {
    const handle = desc.params.handle as number;
    const st = watches.get(handle);
    if (st) {
      stopWatch(st);
      await st.pending.catch(() => undefined);
      watches.delete(handle);
    }
    // Channels closed with I/O in flight had it dropped; give librbd up to one OSD timeout to finish it.
    try {
      await onHandle(handle, () => loadRbd().rbdClose(handle, (desc.params.osdOpTimeout as number) * 1000 + 5000));
    } catch (e) {
      throw rbdFail(desc, e);
    }
    handleOps.delete(handle);
    openImages.delete(desc.params.identity as string);
  },
};
