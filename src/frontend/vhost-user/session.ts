// One vhost-user connection: reads messages, keeps the device state QEMU builds
// up (features, memory table, vrings) and hands started rings to reactors. It
// never touches a request. Every message is validated before it changes state;
// a malformed one ends the session (QEMU sees a reset device), never the process.
import { fstatSync } from 'node:fs';
import type { Logger } from 'pino';
import type { QueueCounterSource, QueueHost, QueuePlacer } from '../../core/reactor-pool.js';
import type { QueueSpec } from '../../core/messages.js';
import type { FdWatcher, Mapping, NativeShim } from '../../native/index.js';
import { readMappedU16 } from '../../native/index.js';
import { inflightSplitStride, recoverSplit } from '../../virtio/inflight.js';
import { inflightPackedStride, recoverPacked } from '../../virtio/inflight-packed.js';
import type { BdevDesc } from '../../bdev/types.js';
import type { BlkParams } from '../../virtio/blk.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES_BIT,
  VIRTIO_F_RING_PACKED_BIT,
  VIRTIO_RING_F_EVENT_IDX_BIT,
  VIRTIO_RING_F_INDIRECT_DESC_BIT,
  bit,
} from '../../virtio/constants.js';
import { E } from '../../virtio/errno.js';
import type { RegionSpec } from '../../virtio/memory.js';
import {
  type Hdr,
  type MemRegionMsg,
  REQ_NAMES,
  Req,
  VHOST_USER_HDR_SIZE,
  VHOST_USER_MAX_PAYLOAD,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_PROTOCOL_F_BACKEND_REQ,
  VHOST_USER_PROTOCOL_F_CONFIG,
  VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
  VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD,
  VHOST_USER_PROTOCOL_F_MQ,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VHOST_USER_PROTOCOL_F_RESET_DEVICE,
  VHOST_USER_PROTOCOL_F_STATUS,
  VHOST_USER_VRING_IDX_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  type VringAddrMsg,
  checkRules,
  decodeHdr,
  decodeMemTable,
  decodeRegion,
  decodeVringAddr,
  encodeHdr,
  readU64Big,
} from './proto.js';
import { BackendChannel } from './backend-channel.js';

export const PROTOCOL_FEATURES =
  bit(VHOST_USER_PROTOCOL_F_MQ) |
  bit(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
  bit(VHOST_USER_PROTOCOL_F_BACKEND_REQ) |
  bit(VHOST_USER_PROTOCOL_F_CONFIG) |
  bit(VHOST_USER_PROTOCOL_F_RESET_DEVICE) |
  bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS) |
  bit(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) |
  bit(VHOST_USER_PROTOCOL_F_STATUS);

/** ADD_MEM_REG slots we accept (QEMU caps what it uses at this). */
export const MAX_MEM_SLOTS = 32;

/** What a session needs from its export. */
export interface SessionContext {
  name: string;
  native: NativeShim;
  pool: QueuePlacer;
  log: Logger;
  bdev: BdevDesc;
  /** the export's, replaced when the bdev is resized */
  blk: BlkParams;
  numQueues: number;
  /** virtio device features (without bit 30) */
  features: bigint;
  config: Uint8Array;
  /** I/O counter buffers, one per queue index for the export's life; absent: counted privately */
  counters?: QueueCounterSource;
  /** the export's interrupt coalescing settings (virtio/coalescing.ts), shared with its queues' reactors */
  coalescing?: SharedArrayBuffer;
}

/** The in-flight region the front-end keeps for us across our restarts (SET_INFLIGHT_FD). */
interface InflightMap {
  map: Mapping;
  mapLen: number;
  /** where the queues' parts start in the mapping */
  offset: number;
  numQueues: number;
  queueSize: number;
  /** laid out for packed rings (virtio/inflight-packed.ts) rather than split */
  packed: boolean;
  /** not a region this process made: a previous vdx's, handed over by the front-end */
  inherited: boolean;
}

/** inodes of the in-flight memfds this process made (GET_INFLIGHT_FD), to tell its own regions from a dead vdx's */
const ownRegions = new Set<string>();
const inodeOf = (fd: number) => {
  const st = fstatSync(fd);
  return `${st.dev}:${st.ino}`;
};

interface MemRegion extends MemRegionMsg {
  map: Mapping;
  mapLen: number;
}

interface Vring {
  num: number;
  base: number;
  addr: VringAddrMsg | undefined;
  /** -2: never set; -1: NOFD (poll); else eventfd */
  kickFd: number;
  callFd: number;
  errFd: number;
  enabled: boolean;
  running: { reactor: QueueHost; id: string } | undefined;
}

const UNSET = -2;

interface Message {
  hdr: Hdr;
  payload: DataView;
  fds: number[];
}

export class VhostUserSession {
  private readonly watcher: FdWatcher;
  private readonly rx = new Uint8Array(VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD);
  private readonly rxFds = new Int32Array(1 + 16);
  private got = 0;
  private readonly hdr: Hdr = { req: 0, flags: 0, size: 0 };
  private haveHdr = false;
  private pendingFds: number[] = [];
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly log: Logger;

  private features = 0n;
  private protocolFeatures = 0n;
  private status = 0;
  private regions: MemRegion[] = [];
  private inflight: InflightMap | undefined;
  /** set while the front-end's last SET_INFLIGHT_FD could not be used */
  private inflightRefused: string | undefined;
  private memGeneration = 0;
  private readonly vrings: Vring[];
  private readonly backend: BackendChannel;
  /**
   * The front-end may hold a config older than ours: tell it (CONFIG_CHANGE_MSG)
   * when a ring next starts. Set at connect (a reconnecting QEMU 7.2 does not
   * re-read the config) and by a change while no ring runs (QEMU ignores the
   * message until its device is started); cleared by a GET_CONFIG answer.
   */
  private configStale = true;
  /** resolves when the session has released everything */
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(
    private readonly fd: number,
    private readonly ctx: SessionContext,
    readonly serial: number,
    private readonly onBrokenRegister: (id: string, handler: (why: string) => void) => () => void,
  ) {
    this.log = ctx.log.child({ session: serial });
    this.vrings = Array.from({ length: ctx.numQueues }, () => this.freshVring());
    this.backend = new BackendChannel(ctx.native, this.log);
    this.done = new Promise((res) => (this.resolveDone = res));
    this.watcher = new ctx.native.FdWatcher(fd);
    this.watcher.start(true, false, (status) => {
      if (status < 0) this.fail(`socket poll error ${status}`);
      else this.readable();
    });
  }

  private freshVring(): Vring {
    return { num: 0, base: 0, addr: undefined, kickFd: UNSET, callFd: UNSET, errFd: UNSET, enabled: false, running: undefined };
  }

  // ------------------------------------------------------------- reading

  private readable(): void {
    const n = this.ctx.native;
    while (!this.closed) {
      const want = this.haveHdr ? VHOST_USER_HDR_SIZE + this.hdr.size - this.got : VHOST_USER_HDR_SIZE - this.got;
      if (want === 0) {
        this.dispatch();
        continue;
      }
      const r = n.recvMsg(this.fd, this.rx, this.got, want, this.rxFds);
      for (let i = 0; i < this.rxFds[0]!; i++) this.pendingFds.push(this.rxFds[1 + i]!);
      this.rxFds[0] = 0;
      if (r === -E.EAGAIN) return;
      if (r === 0) return this.fail('front-end closed the connection', 'info');
      if (r < 0) return this.fail(`recvmsg failed (${-r})`);
      this.got += r;
      if (!this.haveHdr && this.got === VHOST_USER_HDR_SIZE) {
        const rc = decodeHdr(new DataView(this.rx.buffer), 0, this.hdr);
        if (rc < 0) return this.fail(`malformed message header (req ${this.hdr.req}, flags 0x${this.hdr.flags.toString(16)}, size ${this.hdr.size})`);
        this.haveHdr = true;
      }
    }
  }

  /** A whole message is in rx: copy it out and queue it (handlers are async, the buffer is reused). */
  private dispatch(): void {
    const hdr = { ...this.hdr };
    const payload = new DataView(this.rx.slice(VHOST_USER_HDR_SIZE, VHOST_USER_HDR_SIZE + hdr.size).buffer);
    const fds = this.pendingFds;
    this.pendingFds = [];
    this.got = 0;
    this.haveHdr = false;
    this.chain = this.chain.then(() => this.handleSafely({ hdr, payload, fds }));
  }

  private async handleSafely(m: Message): Promise<void> {
    if (this.closed) {
      this.closeFds(m.fds);
      return;
    }
    const rules = checkRules(m.hdr, m.fds.length);
    const name = REQ_NAMES[m.hdr.req] ?? `request ${m.hdr.req}`;
    if (rules === -E.EOPNOTSUPP) {
      this.closeFds(m.fds);
      this.log.warn({ req: m.hdr.req }, `unsupported ${name}`);
      if (this.wantsAck(m.hdr)) this.replyU64(m.hdr.req, 1n);
      return;
    }
    if (rules < 0) {
      this.closeFds(m.fds);
      return this.fail(`${name} with payload ${m.hdr.size} bytes and ${m.fds.length} fds is malformed`);
    }
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ flags: m.hdr.flags, size: m.hdr.size, fds: m.fds.length, payload: Buffer.from(m.payload.buffer).toString('hex').slice(0, 96) }, name);
    }
    try {
      const acked = await this.handle(m);
      if (!acked && this.wantsAck(m.hdr)) this.replyU64(m.hdr.req, 0n);
    } catch (e) {
      const msg = (e as Error).message;
      if (e instanceof ProtocolError) return this.fail(`${name}: ${msg}`);
      this.log.error({ req: name }, msg);
      if (this.wantsAck(m.hdr)) this.replyU64(m.hdr.req, 1n);
    }
  }

  private wantsAck(h: Hdr): boolean {
    return (h.flags & VHOST_USER_NEED_REPLY_MASK) !== 0 && (this.protocolFeatures & bit(VHOST_USER_PROTOCOL_F_REPLY_ACK)) !== 0n;
  }

  // ------------------------------------------------------------- handlers

  /** Returns true when it already sent the reply that REPLY_ACK would otherwise send. */
  private async handle(m: Message): Promise<boolean> {
    const v = m.payload;
    const req = m.hdr.req;
    switch (req) {
      case Req.GET_FEATURES:
        this.replyU64(req, this.ctx.features | bit(VHOST_USER_F_PROTOCOL_FEATURES_BIT));
        return true;
      case Req.SET_FEATURES: {
        const f = readU64Big(v, 0);
        const offered = this.ctx.features | bit(VHOST_USER_F_PROTOCOL_FEATURES_BIT);
        if ((f & ~offered) !== 0n) throw new Error(`features 0x${f.toString(16)} include bits never offered (0x${offered.toString(16)})`);
        this.features = f;
        return false;
      }
      case Req.GET_PROTOCOL_FEATURES:
        this.replyU64(req, PROTOCOL_FEATURES);
        return true;
      case Req.SET_PROTOCOL_FEATURES: {
        const f = readU64Big(v, 0);
        if ((f & ~PROTOCOL_FEATURES) !== 0n) throw new Error(`protocol features 0x${f.toString(16)} were never offered`);
        this.protocolFeatures = f;
        return false;
      }
      case Req.SET_OWNER:
        return false;
      case Req.SET_BACKEND_REQ_FD: {
        const fd = m.fds[0]!; // checkRules: exactly one
        if ((this.protocolFeatures & bit(VHOST_USER_PROTOCOL_F_BACKEND_REQ)) === 0n) {
          this.closeFds(m.fds);
          throw new Error('VHOST_USER_PROTOCOL_F_BACKEND_REQ was not negotiated');
        }
        this.backend.set(fd);
        this.log.info('back-end request channel open');
        return false;
      }
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE:
        await this.resetDevice();
        return false;
      case Req.GET_QUEUE_NUM:
        this.replyU64(req, BigInt(this.ctx.numQueues));
        return true;
      case Req.GET_MAX_MEM_SLOTS:
        this.replyU64(req, BigInt(MAX_MEM_SLOTS));
        return true;
      case Req.SET_MEM_TABLE:
        await this.setMemTable(v, m.hdr.size, m.fds);
        return false;
      case Req.ADD_MEM_REG:
        await this.addMemReg(v, m.fds[0]!);
        return false;
      case Req.REM_MEM_REG:
        this.closeFds(m.fds); // SHOULD carry none; MAY carry one, which we must close
        await this.remMemReg(v);
        return false;
      case Req.SET_VRING_NUM: {
        const q = this.vring(v.getUint32(0, true));
        const num = v.getUint32(4, true);
        // Split rings need a power of two; packed rings any size up to 2^15.
        if (num < 1 || num > 32768 || (!this.packed() && (num & (num - 1)) !== 0)) {
          throw new Error(`queue size ${num} is not ${this.packed() ? 'in' : 'a power of two in'} 1..32768`);
        }
        if (q.running) throw new Error('SET_VRING_NUM on a running queue');
        q.num = num;
        return false;
      }
      case Req.SET_VRING_ADDR: {
        const a: VringAddrMsg = { index: 0, flags: 0, desc: 0, used: 0, avail: 0, log: 0 };
        if (decodeVringAddr(v, 0, a) < 0) throw new Error('ring address beyond 2^53');
        const q = this.vring(a.index);
        if (a.flags !== 0) throw new Error('dirty logging (VHOST_VRING_F_LOG) is not supported');
        if (q.running) throw new Error('SET_VRING_ADDR on a running queue');
        q.addr = a;
        return false;
      }
      case Req.SET_VRING_BASE: {
        const q = this.vring(v.getUint32(0, true));
        const base = v.getUint32(4, true);
        // Packed: next avail | wrap << 15 in the low half, next used | wrap << 15 in the high half.
        if (!this.packed() && base > 0xffff) throw new Error(`split ring base ${base} exceeds 16 bits`);
        if (q.running) throw new Error('SET_VRING_BASE on a running queue');
        q.base = base;
        return false;
      }
      case Req.GET_VRING_BASE: {
        const index = v.getUint32(0, true);
        const q = this.vring(index);
        await this.stopRing(index);
        // The ring is stopped now; it restarts only with a new SET_VRING_KICK.
        this.replaceFd(q, 'kickFd', UNSET);
        this.replyState(req, index, q.base);
        return true;
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR: {
        const u = readU64Big(v, 0);
        const index = Number(u & BigInt(VHOST_USER_VRING_IDX_MASK));
        const nofd = (u & BigInt(VHOST_USER_VRING_NOFD_MASK)) !== 0n;
        if (u >> 9n !== 0n) throw new ProtocolError(`reserved bits set in 0x${u.toString(16)}`);
        if (nofd ? m.fds.length !== 0 : m.fds.length !== 1) throw new ProtocolError(`${nofd ? 'NOFD with' : 'expected 1 fd, got'} ${m.fds.length} fds`);
        let q: Vring;
        try {
          q = this.vring(index);
        } catch (e) {
          this.closeFds(m.fds);
          throw e;
        }
        const fd = nofd ? -1 : m.fds[0]!;
        if (req === Req.SET_VRING_KICK) {
          if (q.running) await this.stopRing(index);
          this.replaceFd(q, 'kickFd', fd);
          // Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled (§ring states).
          if ((this.features & bit(VHOST_USER_F_PROTOCOL_FEATURES_BIT)) === 0n) q.enabled = true;
          await this.maybeStart(index);
        } else if (req === Req.SET_VRING_CALL) {
          const old = q.callFd;
          q.callFd = fd;
          if (q.running) await q.running.reactor.setCall(q.running.id, fd);
          if (old >= 0) this.ctx.native.close(old);
        } else {
          this.replaceFd(q, 'errFd', fd);
        }
        return false;
      }
      case Req.SET_VRING_ENABLE: {
        const index = v.getUint32(0, true);
        const on = v.getUint32(4, true);
        const q = this.vring(index);
        if (on > 1) throw new Error(`SET_VRING_ENABLE num=${on}`);
        q.enabled = on === 1;
        if (q.enabled) await this.maybeStart(index);
        else await this.stopRing(index);
        return false;
      }
      case Req.GET_INFLIGHT_FD:
        this.getInflightFd(v);
        return true;
      case Req.SET_INFLIGHT_FD:
        this.setInflightFd(v, m.fds[0]!);
        return false;
      case Req.GET_CONFIG: {
        const { offset, size } = this.configRange(v, m.hdr.size);
        const out = new Uint8Array(12 + size);
        const ov = new DataView(out.buffer);
        ov.setUint32(0, offset, true);
        ov.setUint32(4, size, true);
        ov.setUint32(8, v.getUint32(8, true), true);
        const cfg = this.ctx.config;
        for (let i = 0; i < size; i++) out[12 + i] = offset + i < cfg.length ? cfg[offset + i]! : 0;
        this.reply(req, out);
        this.configStale = false;
        return true;
      }
      case Req.SET_CONFIG:
        this.configRange(v, m.hdr.size);
        // Every field we expose is read-only (no CONFIG_WCE): refuse, so QEMU knows.
        throw new Error('config space is read-only');
      case Req.SET_STATUS: {
        const s = readU64Big(v, 0);
        if (s > 0xffn) throw new Error(`status 0x${s.toString(16)} exceeds 8 bits`);
        this.status = Number(s);
        return false;
      }
      case Req.GET_STATUS:
        this.replyU64(req, BigInt(this.status));
        return true;
      default:
        throw new Error('not handled');
    }
  }

  private configRange(v: DataView, size: number): { offset: number; size: number } {
    if (size < 12) throw new ProtocolError('config payload shorter than its header');
    const offset = v.getUint32(0, true);
    const len = v.getUint32(4, true);
    if (12 + len !== size) throw new ProtocolError(`config size ${len} does not match payload ${size}`);
    if (len === 0 || offset + len > 256) throw new Error(`config range ${offset}+${len} outside the 256-byte space`);
    return { offset, size: len };
  }

  private packed(): boolean {
    return (this.features & bit(VIRTIO_F_RING_PACKED_BIT)) !== 0n;
  }

  private vring(index: number): Vring {
    const q = this.vrings[index];
    if (!q) throw new Error(`queue ${index} does not exist (device has ${this.vrings.length})`);
    return q;
  }

  private replaceFd(q: Vring, key: 'kickFd' | 'errFd', fd: number): void {
    const old = q[key];
    q[key] = fd;
    if (old >= 0 && old !== fd) this.ctx.native.close(old);
  }

  // ------------------------------------------------------------- memory

  private mapRegion(r: MemRegionMsg, fd: number): MemRegion {
    const n = this.ctx.native;
    try {
      const mapLen = r.mmapOffset + r.size;
      // Map from offset 0 like libvhost-user: hugepage-backed fds want aligned offsets.
      const map = n.mmap(fd, 0, mapLen, n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED);
      return { ...r, map, mapLen };
    } finally {
      n.close(fd); // the mapping keeps the memory; the fd is not needed any more
    }
  }

  private unmapRegion(r: MemRegion): void {
    this.ctx.native.munmap(r.map.buffer, r.map.addr, r.mapLen);
  }

  private async setMemTable(v: DataView, size: number, fds: number[]): Promise<void> {
    const msgs: MemRegionMsg[] = [];
    const rc = decodeMemTable(v, 0, size, fds.length, msgs);
    if (rc < 0) {
      this.closeFds(fds);
      throw new ProtocolError('malformed memory table');
    }
    const bad = this.overlaps(msgs);
    if (bad) {
      this.closeFds(fds);
      throw new Error(bad);
    }
    const mapped: MemRegion[] = [];
    try {
      for (let i = 0; i < msgs.length; i++) mapped.push(this.mapRegion(msgs[i]!, fds[i]!));
    } catch (e) {
      for (const r of mapped) this.unmapRegion(r);
      this.closeFds(fds.slice(mapped.length + 1));
      throw e;
    }
    await this.swapMemory(() => {
      const old = this.regions;
      this.regions = mapped;
      return old;
    });
  }

  private async addMemReg(v: DataView, fd: number): Promise<void> {
    const msgs: MemRegionMsg[] = [];
    if (decodeRegion(v, 8, msgs) < 0) {
      this.closeFds([fd]);
      throw new Error('bad region');
    }
    if (this.regions.length >= MAX_MEM_SLOTS) {
      this.closeFds([fd]);
      throw new Error(`more than ${MAX_MEM_SLOTS} memory regions`);
    }
    const bad = this.overlaps([...this.regions, ...msgs]);
    if (bad) {
      this.closeFds([fd]);
      throw new Error(bad);
    }
    const r = this.mapRegion(msgs[0]!, fd);
    await this.swapMemory(() => {
      this.regions = [...this.regions, r];
      return [];
    });
  }

  private async remMemReg(v: DataView): Promise<void> {
    const msgs: MemRegionMsg[] = [];
    if (decodeRegion(v, 8, msgs) < 0) throw new Error('bad region');
    const m = msgs[0]!;
    // Matched by guest address, user address and size; mmap_offset is ignored (§REM_MEM_REG).
    const i = this.regions.findIndex((r) => r.gpa === m.gpa && r.uva === m.uva && r.size === m.size);
    if (i < 0) throw new Error(`no region at gpa 0x${m.gpa.toString(16)} size 0x${m.size.toString(16)}`);
    await this.swapMemory(() => {
      const old = [this.regions[i]!];
      this.regions = this.regions.filter((_, k) => k !== i);
      return old;
    });
  }

  private overlaps(rs: MemRegionMsg[]): string | undefined {
    for (let i = 0; i < rs.length; i++) {
      for (let k = i + 1; k < rs.length; k++) {
        const a = rs[i]!;
        const b = rs[k]!;
        if (a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size) return `memory regions overlap at gpa 0x${b.gpa.toString(16)}`;
      }
    }
    return undefined;
  }

  /**
   * Change the memory table under running rings: stop them (reactors drop their
   * views), swap, restart them on the new table, then unmap what went away.
   */
  private async swapMemory(swap: () => MemRegion[]): Promise<void> {
    const running = this.vrings.map((q, i) => (q.running ? i : -1)).filter((i) => i >= 0);
    for (const i of running) await this.stopRing(i);
    const old = swap();
    this.memGeneration++;
    for (const r of old) this.unmapRegion(r);
    for (const i of running) await this.maybeStart(i);
  }

  private regionSpecs(): RegionSpec[] {
    return this.regions.map((r) => ({ gpa: r.gpa, uva: r.uva, hostAddr: r.map.addr + r.mmapOffset, lenBytes: r.size }));
  }

  /** Host address of a front-end (QEMU) virtual address range, or -1. */
  private uvaToHost(uva: number, len: number): number {
    for (const r of this.regions) {
      if (uva >= r.uva && uva + len <= r.uva + r.size) return r.map.addr + r.mmapOffset + (uva - r.uva);
    }
    return -1;
  }

  // ------------------------------------------------------------- rings

  private queueId(index: number): string {
    return `${this.ctx.name}#${this.serial}/${index}`;
  }

  private unregisterBroken = new Map<number, () => void>();

  private async maybeStart(index: number): Promise<void> {
    const q = this.vrings[index]!;
    if (q.running || !q.enabled || q.kickFd === UNSET || !q.addr || q.num === 0 || this.regions.length === 0) return;
    const a = q.addr;
    const packed = this.packed();
    const desc = this.uvaToHost(a.desc, 16 * q.num);
    const avail = this.uvaToHost(a.avail, packed ? 4 : 6 + 2 * q.num);
    const used = this.uvaToHost(a.used, packed ? 4 : 6 + 8 * q.num);
    if (desc < 0 || avail < 0 || used < 0) throw new Error(`queue ${index}: ring addresses are outside the memory table`);
    const id = this.queueId(index);
    const usedIdx = packed ? q.base >>> 16 : readMappedU16(this.regions.map((r) => r.map), used + 2);
    if (usedIdx === undefined) throw new Error(`queue ${index}: used ring is outside the memory table`);
    const resume = this.recoverQueue(index, q.num, packed ? q.base : usedIdx, desc);
    const lastAvail = resume?.lastAvail ?? (packed ? q.base & 0xffff : q.base);
    const spec: QueueSpec = {
      id,
      device: `${this.ctx.name}#${this.serial}`,
      memory: { generation: this.memGeneration, regions: this.regionSpecs() },
      size: q.num,
      packed,
      descAddr: desc,
      availAddr: avail,
      usedAddr: used,
      eventIdx: (this.features & bit(VIRTIO_RING_F_EVENT_IDX_BIT)) !== 0n,
      indirect: (this.features & bit(VIRTIO_RING_F_INDIRECT_DESC_BIT)) !== 0n,
      lastAvail,
      usedIdx: resume?.usedIdx ?? usedIdx,
      ...(resume ? { inflight: resume.inflight } : {}),
      kickFd: q.kickFd,
      callFd: q.callFd >= 0 ? q.callFd : -1,
      bdev: this.ctx.bdev,
      blk: this.ctx.blk,
      counters: this.ctx.counters?.forQueue(this.ctx.name, this.ctx.bdev.info.name, 'vhost-user', index),
      coalescing: this.ctx.coalescing,
    };
    const reactor = this.ctx.pool.pick();
    this.unregisterBroken.set(index, this.onBrokenRegister(id, (why) => this.ringBroken(index, why)));
    try {
      await reactor.addQueue(spec);
    } catch (e) {
      this.unregisterBroken.get(index)?.();
      this.unregisterBroken.delete(index);
      throw e;
    }
    q.running = { reactor, id };
    // One interrupt at every start, as libvhost-user gives on SET_VRING_CALL:
    // completions published just before a previous daemon died, and drivers
    // that wait for a signal after a reconnect, are seen now.
    if (q.callFd >= 0) this.ctx.native.eventfdWrite(q.callFd, 1);
    if (resume?.inherited) {
      this.log.info({ queue: index, usedIdx: resume.usedIdx, lastAvail, resubmitted: resume.inflight.resubmit.length }, 'queue resumed from the in-flight region');
    }
    this.log.info({ queue: index, size: q.num, packed, reactor: reactor.index, base: lastAvail }, 'queue started');
    if (this.configStale && this.backend.open) {
      this.configStale = false;
      if (this.backend.configChanged()) this.log.info('config change sent to the front-end (its config may predate this session)');
    }
  }

  // ------------------------------------------------------------- in-flight region

  /**
   * GET_INFLIGHT_FD: a fresh zeroed region for num_queues queues of
   * queue_size descriptors, laid out for the ring type the features chose
   * (QEMU sends SET_FEATURES first): libvhost-user's split layout
   * (virtio/inflight.ts) or the packed one (virtio/inflight-packed.ts).
   */
  private getInflightFd(v: DataView): void {
    const numQueues = v.getUint16(16, true);
    const queueSize = v.getUint16(18, true);
    const out = new Uint8Array(24);
    const ov = new DataView(out.buffer);
    const n = this.ctx.native;
    let fd: number;
    try {
      this.checkInflightShape(numQueues, queueSize);
      fd = n.memfdCreate(`vdx-inflight-${this.ctx.name}`, n.MFD_CLOEXEC);
    } catch (e) {
      // QEMU waits for this reply with no timeout: answer "no region" rather than nothing.
      this.log.warn(`GET_INFLIGHT_FD: ${(e as Error).message}; the rings run without in-flight tracking`);
      this.reply(Req.GET_INFLIGHT_FD, out);
      return;
    }
    const bytes = numQueues * this.inflightStride(queueSize);
    try {
      ownRegions.add(inodeOf(fd));
      n.ftruncate(fd, bytes);
      ov.setBigUint64(0, BigInt(bytes), true);
      ov.setBigUint64(8, 0n, true);
      ov.setUint16(16, numQueues, true);
      ov.setUint16(18, queueSize, true);
      this.reply(Req.GET_INFLIGHT_FD, out, [fd]);
    } finally {
      // The front-end holds it now and sends it back with SET_INFLIGHT_FD.
      n.close(fd);
    }
  }

  private inflightStride(queueSize: number): number {
    return this.packed() ? inflightPackedStride(queueSize) : inflightSplitStride(queueSize);
  }

  private checkInflightShape(numQueues: number, queueSize: number): void {
    if (numQueues < 1 || numQueues > this.vrings.length) throw new Error(`in-flight region for ${numQueues} queues; the device has ${this.vrings.length}`);
    if (queueSize < 1 || queueSize > 32768 || (queueSize & (queueSize - 1)) !== 0) throw new Error(`in-flight queue size ${queueSize} is not a power of two in 1..32768`);
  }

  /** SET_INFLIGHT_FD: map the region (ours from GET, or a previous daemon's). */
  private setInflightFd(v: DataView, fd: number): void {
    const n = this.ctx.native;
    let map: Mapping;
    let mapLen: number;
    let offset: number;
    let inherited: boolean;
    const numQueues = v.getUint16(16, true);
    const queueSize = v.getUint16(18, true);
    // Running rings write to the mapped region: it must not go from under them.
    if (this.vrings.some((q) => q.running)) {
      n.close(fd);
      throw new Error('SET_INFLIGHT_FD while queues are running; the region in use is kept');
    }
    // Until a region is mapped, rings must not start: where they resume is unknown.
    this.dropInflight();
    this.inflightRefused = 'the front-end\'s in-flight region was refused';
    try {
      this.checkInflightShape(numQueues, queueSize);
      const size = readU64Big(v, 0);
      const off = readU64Big(v, 8);
      const need = BigInt(numQueues * this.inflightStride(queueSize));
      if (size < need) throw new Error(`in-flight region of ${size} bytes; ${numQueues} queues of ${queueSize} need ${need}`);
      if (size > need * 2n || off > 1n << 30n) throw new Error(`in-flight region of ${size} bytes at offset ${off} is not one vdx would make`);
      offset = Number(off);
      mapLen = offset + Number(size);
      inherited = !ownRegions.has(inodeOf(fd));
      map = n.mmap(fd, 0, mapLen, n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED);
    } catch (e) {
      this.inflightRefused = `the front-end's in-flight region was refused (${(e as Error).message})`;
      throw e;
    } finally {
      n.close(fd);
    }
    this.inflight = { map, mapLen, offset, numQueues, queueSize, packed: this.packed(), inherited };
    this.inflightRefused = undefined;
  }

  /**
   * Where queue `index` resumes, from its part of the in-flight region and
   * what the driver sees (split: the used index in guest memory; packed: the
   * ring's descriptors, `base` being SET_VRING_BASE, stale after a crash):
   * requests a previous daemon left in flight run again, oldest first, before
   * new ones. undefined without a region. A region that cannot be trusted
   * refuses the queue (nothing is resubmitted).
   */
  private recoverQueue(
    index: number,
    vringNum: number,
    base: number,
    descAddr: number,
  ): { lastAvail: number; usedIdx: number; inherited: boolean; inflight: NonNullable<QueueSpec['inflight']> } | undefined {
    if (this.inflightRefused) throw new Error(`queue ${index}: ${this.inflightRefused}; the queue is not started`);
    const r = this.inflight;
    if (!r) return undefined;
    if (index >= r.numQueues) throw new Error(`queue ${index} has no part in the in-flight region (${r.numQueues} queues)`);
    if (r.packed !== this.packed()) throw new Error(`queue ${index}: the in-flight region was made for ${r.packed ? 'packed' : 'split'} rings; the queue is not started`);
    const at = r.offset + index * this.inflightStride(r.queueSize);
    // A region a dead vdx used describes a disk whose data, for a malloc bdev, died with it:
    // serving the ring on would show the guest zeros under its caches.
    if (r.inherited && this.ctx.bdev.info.volatile && new DataView(r.map.buffer, at, 16).getUint16(8, true) !== 0) {
      throw new Error(`queue ${index}: the front-end's ring state comes from a vdx that died, and bdev '${this.ctx.bdev.info.name}' is a ${this.ctx.bdev.info.type} bdev whose data died with it; the queue is not started (reset the guest's device, or use a bdev that persists)`);
    }
    const inflight = (resubmit: number[], nextCounter: number) => ({ addr: r.map.addr + at, descNum: r.queueSize, resubmit, nextCounter });
    if (r.packed) {
      const maps = this.regions.map((m) => m.map);
      const rec = recoverPacked(r.map.buffer, at, r.queueSize, vringNum, (pos) => readMappedU16(maps, descAddr + 16 * pos + 14), base);
      if (typeof rec === 'string') throw new Error(`queue ${index}: ${rec}; the queue is not started`);
      return { lastAvail: rec.availState, usedIdx: rec.usedState, inherited: rec.inherited, inflight: inflight(rec.resubmit, rec.nextCounter) };
    }
    const rec = recoverSplit(r.map.buffer, at, r.queueSize, vringNum, base);
    if (typeof rec === 'string') throw new Error(`queue ${index}: ${rec}; the queue is not started`);
    return { lastAvail: rec.lastAvail, usedIdx: base, inherited: rec.inherited, inflight: inflight(rec.resubmit, rec.nextCounter) };
  }

  private dropInflight(): void {
    const r = this.inflight;
    if (!r) return;
    this.inflight = undefined;
    this.ctx.native.munmap(r.map.buffer, r.map.addr, r.mapLen);
  }

  private async stopRing(index: number): Promise<void> {
    const q = this.vrings[index]!;
    if (!q.running) return;
    const { reactor, id } = q.running;
    q.running = undefined;
    const st = await reactor.stopQueue(id);
    q.base = this.packed() ? (st.usedIdx * 0x10000 + st.lastAvail) >>> 0 : st.lastAvail;
    this.unregisterBroken.get(index)?.();
    this.unregisterBroken.delete(index);
    this.log.info({ queue: index, base: q.base }, 'queue stopped');
  }

  private ringBroken(index: number, why: string): void {
    const q = this.vrings[index]!;
    this.log.error({ queue: index }, `queue broken: ${why}`);
    // The error eventfd is how a vhost-user back-end tells QEMU a ring is unusable.
    if (q.errFd >= 0) this.ctx.native.eventfdWrite(q.errFd, 1);
  }

  private async resetDevice(): Promise<void> {
    for (let i = 0; i < this.vrings.length; i++) await this.stopRing(i);
    for (const q of this.vrings) {
      for (const fd of [q.kickFd, q.callFd, q.errFd]) if (fd >= 0) this.ctx.native.close(fd);
    }
    this.vrings.forEach((_, i) => (this.vrings[i] = this.freshVring()));
    // A reset abandons what was in flight; the front-end asks for a new region (QEMU frees its own).
    this.dropInflight();
    this.inflightRefused = undefined;
    this.status = 0;
  }

  // ------------------------------------------------------------- config changes

  /**
   * The export's config space changed (ctx.config, a resize): tell the
   * front-end now if it gave us a back-end channel. Never blocks or throws.
   */
  configChanged(): void {
    if (this.closed) return;
    if (!this.vrings.some((q) => q.running)) this.configStale = true;
    if (!this.backend.open) {
      this.log.info('config changed; no back-end request channel, the front-end sees it on its next GET_CONFIG');
      return;
    }
    if (this.backend.configChanged()) this.log.info('config change sent to the front-end');
  }

  // ------------------------------------------------------------- replies

  private reply(req: number, payload: Uint8Array, fds: number[] = []): void {
    const buf = new Uint8Array(VHOST_USER_HDR_SIZE + payload.length);
    encodeHdr(new DataView(buf.buffer), req, payload.length);
    buf.set(payload, VHOST_USER_HDR_SIZE);
    const rc = this.ctx.native.sendMsg(this.fd, buf, 0, buf.length, fds);
    if (rc !== buf.length) this.fail(`reply to ${REQ_NAMES[req]} failed (${rc})`);
  }

  private replyU64(req: number, value: bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, value, true);
    this.reply(req, b);
  }

  private replyState(req: number, index: number, num: number): void {
    const b = new Uint8Array(8);
    const v = new DataView(b.buffer);
    v.setUint32(0, index, true);
    v.setUint32(4, num, true);
    this.reply(req, b);
  }

  // ------------------------------------------------------------- teardown

  private closeFds(fds: number[]): void {
    for (const fd of fds) this.ctx.native.close(fd);
  }

  private fail(why: string, level: 'info' | 'error' = 'error'): void {
    if (this.closed) return;
    this.closed = true;
    this.log[level](`session ended: ${why}`);
    this.watcher.close();
    this.closeFds(this.pendingFds);
    this.pendingFds = [];
    // Finish what is queued (it sees `closed` and only releases fds), then release the device.
    this.chain = this.chain
      .then(() => this.release())
      .catch((e: Error) => this.log.error(`session cleanup failed: ${e.message}`))
      .finally(() => this.resolveDone());
  }

  private async release(): Promise<void> {
    for (let i = 0; i < this.vrings.length; i++) {
      try {
        await this.stopRing(i);
      } catch (e) {
        this.log.error({ queue: i }, `stopping queue failed: ${(e as Error).message}`);
      }
    }
    for (const q of this.vrings) for (const fd of [q.kickFd, q.callFd, q.errFd]) if (fd >= 0) this.ctx.native.close(fd);
    for (const r of this.regions) this.unmapRegion(r);
    this.regions = [];
    this.dropInflight();
    this.backend.close();
    this.ctx.native.close(this.fd);
  }

  /** End the session from our side (daemon shutdown). */
  close(): Promise<void> {
    this.fail('export is shutting down', 'info');
    return this.done;
  }
}

/** A message whose framing is wrong: the session cannot continue. */
class ProtocolError extends Error {}
