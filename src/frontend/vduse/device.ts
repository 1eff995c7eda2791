// A VDUSE virtio-blk device (Documentation/userspace-api/vduse.rst): created on
// /dev/vduse/control, served from /dev/vduse/$NAME. The main thread answers the
// kernel's control messages (status, vq state, IOTLB updates) promptly and hands
// started queues to reactors; it never touches a request.
import { closeSync, constants as FS, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { QueueCounterSource, QueueHost, QueuePlacer } from '../../core/reactor-pool.js';
import { describeIotlb, mapIotlbEntry, type IotlbRegion } from '../../core/iotlb.js';
import type { QueueSpec } from '../../core/messages.js';
import type { BdevDesc } from '../../bdev/types.js';
import type { FdWatcher, NativeShim } from '../../native/index.js';
import { E, errnoName, readMappedU16 } from '../../native/index.js';
import type { BlkParams } from '../../virtio/blk.js';
import { blkConfig, blkFeatures, type BlkExportOptions } from '../../virtio/blk-config.js';
import {
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_ACCESS_PLATFORM_BIT,
  VIRTIO_F_RING_PACKED_BIT,
  VIRTIO_RING_F_EVENT_IDX_BIT,
  VIRTIO_RING_F_INDIRECT_DESC_BIT,
  bit,
} from '../../virtio/constants.js';
import { VDPA_MODULE_HINT } from '../../vdpa/client.js';
import { recoverSplit } from '../../virtio/inflight.js';
import { recoverPacked } from '../../virtio/inflight-packed.js';
import { processAlive, recordDifference, VduseState, type VduseRecord } from './state.js';
import {
  VDUSE_API_VERSION,
  VDUSE_CREATE_DEV,
  VDUSE_DESTROY_DEV,
  VDUSE_DEV_GET_FEATURES,
  VDUSE_DEV_INJECT_CONFIG_IRQ,
  VDUSE_DEV_SET_CONFIG,
  VDUSE_GET_VQ_STATE,
  VDUSE_IOTLB_GET_FD,
  VDUSE_MSG_SIZE,
  VDUSE_REQ_RESULT_FAILED,
  VDUSE_REQ_RESULT_OK,
  VDUSE_SET_API_VERSION,
  VDUSE_SET_STATUS,
  VDUSE_UPDATE_IOTLB,
  VDUSE_VQ_GET_INFO,
  VDUSE_VQ_INJECT_IRQ,
  VDUSE_VQ_SETUP,
  VDUSE_VQ_SETUP_KICKFD,
  type VduseRequest,
  decodeRequest,
  decodeVqInfo,
  encodeDevConfig,
  encodeName,
  encodeResponse,
  encodeVqConfig,
  encodeVqEventfd,
  vqInfoBuffer,
} from './proto.js';

export const VDUSE_CONTROL = '/dev/vduse/control';
const VIRTIO_ID_BLOCK = 2;
const VQ_ALIGN = 4096;

interface Vq {
  kickFd: number;
  running: { host: QueueHost; id: string } | undefined;
  /** avail index to resume from / report while stopped (packed: index | wrap << 15) */
  lastAvail: number;
  /** packed rings keep no used index in memory: where ours resumes (index | wrap << 15) */
  lastUsed: number;
  /** stopped by us (IOTLB change), not reset by the driver: resume at lastAvail */
  resume: boolean;
}

export interface VduseDeviceContext {
  native: NativeShim;
  pool: QueuePlacer;
  log: Logger;
  bdev: BdevDesc;
  blk: BlkParams;
  opts: BlkExportOptions & { vduseName: string; packed: boolean; msgTimeout?: number | undefined };
  /** where the device's record and in-flight log live (state.ts) */
  stateDir: string;
  /** reactors report broken queues through the export */
  onBroken: (id: string, handler: (why: string) => void) => () => void;
  /** I/O counter buffers, one per queue index for the export's life; absent: counted privately */
  counters?: QueueCounterSource;
  /** the export's interrupt coalescing settings (virtio/coalescing.ts), shared with its queues' reactors */
  coalescing?: SharedArrayBuffer;
}

export class VduseDevice {
  private ctl = -1;
  private dev = -1;
  private watcher: FdWatcher | undefined;
  private readonly rx = new Uint8Array(VDUSE_MSG_SIZE);
  private chain: Promise<void> = Promise.resolve();
  private status = 0;
  private regions: IotlbRegion[] = [];
  private readonly vqs: Vq[] = [];
  private readonly offered: bigint;
  private config: Uint8Array;
  private starts = 0;
  private readonly log: Logger;
  private readonly unregister = new Map<number, () => void>();
  private closed = false;
  private readonly state: VduseState;
  /** the device existed and this process took it over from a previous vdx */
  reattached = false;

  constructor(private readonly ctx: VduseDeviceContext) {
    this.log = ctx.log;
    // ACCESS_PLATFORM is mandatory for VDUSE; CONFIG_WCE is refused (blkFeatures never offers it).
    this.offered =
      blkFeatures(ctx.blk, ctx.opts.numQueues) | bit(VIRTIO_F_ACCESS_PLATFORM_BIT) | (ctx.opts.packed ? bit(VIRTIO_F_RING_PACKED_BIT) : 0n);
    this.config = blkConfig(ctx.blk, ctx.opts);
    this.state = new VduseState(ctx.native, ctx.stateDir, ctx.opts.vduseName);
  }

  get name(): string {
    return this.ctx.opts.vduseName;
  }

  /** This process created /dev/vduse/NAME (and so owns its place on the bus). */
  get created(): boolean {
    return this.dev >= 0;
  }

  private record(): VduseRecord {
    return {
      name: this.name,
      features: this.offered.toString(16),
      numQueues: this.ctx.opts.numQueues,
      queueSize: this.ctx.opts.queueSize,
      config: Buffer.from(this.config).toString('hex'),
      pid: process.pid,
    };
  }

  /**
   * Create /dev/vduse/NAME, set up every queue and start answering the kernel;
   * or, if a previous vdx created it and died, take it back (reattach);
   * `serve: false` takes it back only to answer the kernel while it is
   * removed (its data is gone), starting no queue.
   */
  async create(o: { serve?: boolean } = {}): Promise<void> {
    const n = this.ctx.native;
    this.closed = false;
    this.status = 0;
    this.reattached = false;
    if (!existsSync(VDUSE_CONTROL)) throw new Error(`${VDUSE_CONTROL} is missing: ${VDPA_MODULE_HINT}`);
    this.ctl = openSync(VDUSE_CONTROL, FS.O_RDWR);
    const ver = new Uint8Array(8);
    new DataView(ver.buffer).setBigUint64(0, BigInt(VDUSE_API_VERSION), true);
    let rc = n.ioctl(this.ctl, VDUSE_SET_API_VERSION, ver);
    if (rc < 0) throw this.fail(`VDUSE_SET_API_VERSION: ${errnoName(-rc)}`);
    if (existsSync(`/dev/vduse/${this.name}`)) return this.reattach(o.serve ?? true);
    const cfg = encodeDevConfig({
      name: this.name,
      deviceId: VIRTIO_ID_BLOCK,
      features: this.offered,
      vqNum: this.ctx.opts.numQueues,
      vqAlign: VQ_ALIGN,
      config: this.config,
    });
    // Before the device exists: a kill from then on leaves a record to re-attach by
    // (one before CREATE_DEV leaves a record with no device, which the next start overwrites).
    try {
      this.state.writeRecord(this.record());
      this.state.createLog(this.ctx.opts.numQueues, this.ctx.opts.queueSize);
    } catch (e) {
      throw this.fail(`VDUSE device ${this.name}: keeping its state in ${this.state.dir}: ${(e as Error).message} (--state-dir)`);
    }
    rc = n.ioctl(this.ctl, VDUSE_CREATE_DEV, cfg);
    if (rc < 0) {
      this.state.remove();
      if (rc === -E.EEXIST) throw this.fail(`a VDUSE device named '${this.name}' already exists; choose another name=`);
      throw this.fail(`VDUSE_CREATE_DEV ${this.name}: ${errnoName(-rc)}`);
    }
    try {
      this.dev = openSync(`/dev/vduse/${this.name}`, FS.O_RDWR | FS.O_NONBLOCK);
      for (let i = 0; i < this.ctx.opts.numQueues; i++) {
        rc = n.ioctl(this.dev, VDUSE_VQ_SETUP, encodeVqConfig(i, this.ctx.opts.queueSize));
        if (rc < 0) throw new Error(`VDUSE_VQ_SETUP ${i}: ${errnoName(-rc)}`);
        this.addVq();
      }
      this.applyMsgTimeout();
    } catch (e) {
      try {
        this.destroyDevice();
        this.state.remove();
      } catch (d) {
        this.log.error((d as Error).message);
      }
      throw this.fail((e as Error).message);
    }
    // Messages arrive while the device is being added to the bus: serve them from now on.
    this.watch();
    this.log.info({ queues: this.ctx.opts.numQueues, queueSize: this.ctx.opts.queueSize }, `VDUSE device /dev/vduse/${this.name} created`);
  }

  /** /dev/vduse/NAME exists and the state directory records vdx creating it: a previous vdx left it. */
  leftOver(): boolean {
    if (!existsSync(`/dev/vduse/${this.name}`)) return false;
    try {
      const r = this.state.readRecord();
      return r !== undefined && !(r.pid !== undefined && processAlive(r.pid));
    } catch {
      return false; // create() refuses it, saying why
    }
  }

  private addVq(): void {
    const kickFd = this.ctx.native.eventfd(0, this.ctx.native.EFD_NONBLOCK | this.ctx.native.EFD_CLOEXEC);
    this.vqs.push({ kickFd, running: undefined, lastAvail: 0, lastUsed: 0, resume: false });
  }

  private watch(): void {
    this.watcher = new this.ctx.native.FdWatcher(this.dev);
    this.watcher.start(true, false, () => this.readable());
  }

  /**
   * The device outlived the vdx that created it (Linux keeps it, its config
   * and its bounce pages): check it is the one the record describes, open
   * it, and resume where the log says. Refused, and left untouched, when vdx
   * has no record of it or the record does not match the export.
   */
  private async reattach(serve: boolean): Promise<void> {
    let saved: VduseRecord | undefined;
    try {
      saved = this.state.readRecord();
    } catch (e) {
      throw this.fail(`VDUSE device '${this.name}' exists; ${(e as Error).message}: not touched`);
    }
    if (!saved) {
      throw this.fail(`a VDUSE device named '${this.name}' exists and ${this.state.dir} has no record of vdx creating it: not touched; choose another name=`);
    }
    if (saved.pid !== undefined && processAlive(saved.pid)) {
      throw this.fail(`a VDUSE device named '${this.name}' already exists and vdx pid ${saved.pid} serves it: not touched; choose another name=`);
    }
    // Only to remove it (serve: false), its shape does not matter.
    const diff = serve ? recordDifference(saved, this.record(), { ignoreCapacity: true }) : undefined;
    if (diff) throw this.fail(`VDUSE device '${this.name}' exists but is not this export's: ${diff}; not touched`);
    // The previous process's file may still be closing (its last fd goes with its exit).
    for (let tries = 0; ; tries++) {
      try {
        this.dev = openSync(`/dev/vduse/${this.name}`, FS.O_RDWR | FS.O_NONBLOCK);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EBUSY' || tries >= 50) {
          const busy = (e as NodeJS.ErrnoException).code === 'EBUSY' ? ' (another process has it open: is a vdx still serving it?)' : '';
          throw this.fail(`opening /dev/vduse/${this.name}: ${(e as Error).message}${busy}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    try {
      this.state.openLog(this.ctx.opts.numQueues, this.ctx.opts.queueSize);
      if (serve) this.applyMsgTimeout();
    } catch (e) {
      // Only to remove it (serve: false), a log that does not add up does not matter.
      if (serve) {
        closeSync(this.dev);
        this.dev = -1;
        throw this.fail(`VDUSE device '${this.name}' exists, but ${(e as Error).message}; not touched`);
      }
    }
    for (let i = 0; i < this.ctx.opts.numQueues; i++) this.addVq();
    this.status = this.state.status;
    this.reattached = true;
    // Resume before answering anything: the kernel replays what the old process
    // read and never answered, and a reset among it must find the queues running.
    const resumed = this.chain.then(async () => {
      if (serve && this.status & VIRTIO_CONFIG_S_DRIVER_OK) await this.startQueues();
    });
    this.chain = resumed.catch(() => {});
    this.watch();
    try {
      await resumed;
    } catch (e) {
      // Nothing half-served: the device goes back to waiting for a vdx that can resume it.
      await this.detach().catch(() => {});
      throw this.fail(`VDUSE device '${this.name}' exists, but resuming it failed: ${(e as Error).message}; left as it was`);
    }
    // A capacity that changed while no vdx served it (or a kill between the
    // config update and the record): the driver hears of it now.
    if (serve && Buffer.from(saved.config, 'hex').readBigUInt64LE(0) !== BigInt(this.ctx.blk.sizeBytes / 512)) {
      this.setCapacity(this.ctx.blk.sizeBytes);
      this.log.info({ sizeBytes: this.ctx.blk.sizeBytes }, 'capacity changed while no vdx served the device: the driver was told');
    } else {
      this.state.writeRecord(this.record()); // this process serves it now
    }
    this.log.info({ status: this.status, queues: this.vqs.filter((q) => q.running).length }, `VDUSE device /dev/vduse/${this.name} re-attached`);
  }

  private get msgTimeoutPath(): string {
    return `/sys/class/vduse/${this.name}/msg_timeout`;
  }

  /**
   * The kernel breaks the device for good when a control message goes
   * unanswered this long, so a restart of vdx must fit in it: the export may
   * ask for more than the kernel's 30 s (before the device is on the bus).
   */
  private applyMsgTimeout(): void {
    const t = this.ctx.opts.msgTimeout;
    if (t === undefined) return;
    try {
      writeFileSync(this.msgTimeoutPath, `${t}\n`);
    } catch (e) {
      throw new Error(`setting msg-timeout=${t} (${this.msgTimeoutPath}): ${(e as Error).message}`);
    }
  }

  /** Seconds the kernel waits for an answer now; undefined if it cannot be read. */
  msgTimeout(): number | undefined {
    try {
      const v = Number(readFileSync(this.msgTimeoutPath, 'utf8').trim());
      return Number.isInteger(v) ? v : undefined;
    } catch {
      return undefined;
    }
  }

  private fail(msg: string): Error {
    if (this.ctl >= 0) {
      closeSync(this.ctl);
      this.ctl = -1;
    }
    return new Error(msg);
  }

  // ------------------------------------------------------------- messages

  private readable(): void {
    const n = this.ctx.native;
    while (!this.closed) {
      const r = n.read(this.dev, this.rx);
      if (r === -E.EAGAIN) return;
      if (r < 0) {
        this.log.error(`reading /dev/vduse/${this.name}: ${errnoName(-r)}`);
        return;
      }
      const req = decodeRequest(this.rx.slice(0, r));
      if (!req) {
        this.log.error(`short VDUSE message (${r} bytes)`);
        continue;
      }
      // Strictly one at a time: a status change may wait for reactors. Every
      // request gets an answer, or the kernel would wait msg_timeout and break the device.
      this.chain = this.chain.then(() => this.handle(req)).catch((e: Error) => {
        this.log.error(`VDUSE request ${req.type} failed: ${e.message}`);
        if (!this.closed) this.respond(req.id, VDUSE_REQ_RESULT_FAILED);
      });
    }
  }

  /** Did the driver choose packed rings? (only once FEATURES_OK) */
  private packedRings(): boolean {
    return (this.status & VIRTIO_CONFIG_S_FEATURES_OK) !== 0 && (this.driverFeatures() & bit(VIRTIO_F_RING_PACKED_BIT)) !== 0n;
  }

  private respond(id: number, result: number, state?: Parameters<typeof encodeResponse>[2]): void {
    const rc = this.ctx.native.write(this.dev, encodeResponse(id, result, state));
    if (rc !== VDUSE_MSG_SIZE) this.log.error(`VDUSE response ${id}: ${rc < 0 ? errnoName(-rc) : `${rc} bytes`}`);
  }

  private async handle(req: VduseRequest): Promise<void> {
    if (this.closed) return;
    switch (req.type) {
      case VDUSE_GET_VQ_STATE: {
        const index = (req as { index: number }).index;
        const vq = this.vqs[index];
        if (!vq) return this.respond(req.id, VDUSE_REQ_RESULT_FAILED);
        const packed = this.packedRings();
        if (vq.running) {
          const st = await vq.running.host.queueState(vq.running.id);
          vq.lastAvail = st.lastAvail;
          vq.lastUsed = st.usedIdx;
        } else if (!vq.resume) {
          // Never started: the state is still what the driver set.
          const buf = vqInfoBuffer(index);
          if (this.ctx.native.ioctl(this.dev, VDUSE_VQ_GET_INFO, buf) < 0) return this.respond(req.id, VDUSE_REQ_RESULT_FAILED);
          const info = decodeVqInfo(buf);
          vq.lastAvail = packed ? info.packedAvail : info.availIndex;
          vq.lastUsed = info.packedUsed;
        }
        if (packed) return this.respond(req.id, VDUSE_REQ_RESULT_OK, { index, packedAvail: vq.lastAvail, packedUsed: vq.lastUsed });
        return this.respond(req.id, VDUSE_REQ_RESULT_OK, { index, avail: vq.lastAvail });
      }
      case VDUSE_SET_STATUS: {
        const s = (req as { status: number }).status;
        const ok = await this.setStatus(s);
        return this.respond(req.id, ok ? VDUSE_REQ_RESULT_OK : VDUSE_REQ_RESULT_FAILED);
      }
      case VDUSE_UPDATE_IOTLB: {
        // The kernel says [start, last] changed (in practice [0, ~0]): drop every
        // cached mapping; running queues restart on the new table.
        const running = this.vqs.some((q) => q.running);
        try {
          if (running) {
            await this.stopQueues();
            this.unmapAll();
            await this.startQueues();
          } else {
            this.unmapAll();
          }
          return this.respond(req.id, VDUSE_REQ_RESULT_OK);
        } catch (e) {
          this.log.error(`IOTLB update: ${(e as Error).message}`);
          return this.respond(req.id, VDUSE_REQ_RESULT_FAILED);
        }
      }
      default:
        this.log.warn({ type: req.type }, 'unknown VDUSE request');
        return this.respond(req.id, VDUSE_REQ_RESULT_FAILED);
    }
  }

  private async setStatus(s: number): Promise<boolean> {
    const old = this.status;
    if (s === 0) {
      await this.stopQueues();
      this.unmapAll();
      for (const vq of this.vqs) {
        vq.lastAvail = 0;
        vq.lastUsed = 0;
        vq.resume = false;
      }
      this.status = 0;
      this.state.clearRegions();
      this.state.status = 0;
      this.log.info('device reset');
      return true;
    }
    if (s & VIRTIO_CONFIG_S_FEATURES_OK && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
      const f = this.driverFeatures();
      if ((f & ~this.offered) !== 0n) {
        this.log.error(`driver accepted features 0x${f.toString(16)} beyond those offered (0x${this.offered.toString(16)})`);
        return false;
      }
    }
    if (s & VIRTIO_CONFIG_S_DRIVER_OK && !(old & VIRTIO_CONFIG_S_DRIVER_OK)) {
      try {
        await this.startQueues();
      } catch (e) {
        this.log.error(`starting queues: ${(e as Error).message}`);
        await this.stopQueues();
        return false;
      }
    }
    this.status = s;
    this.state.status = s;
    return true;
  }

  private driverFeatures(): bigint {
    const b = new Uint8Array(8);
    const rc = this.ctx.native.ioctl(this.dev, VDUSE_DEV_GET_FEATURES, b);
    if (rc < 0) throw new Error(`VDUSE_DEV_GET_FEATURES: ${errnoName(-rc)}`);
    return new DataView(b.buffer).getBigUint64(0, true);
  }

  // ------------------------------------------------------------- memory

  /** Make sure the IOTLB entry covering `iova` is mapped (see mapIotlbEntry). */
  private resolve(iova: bigint): boolean {
    if (this.regions.some((r) => iova >= BigInt(r.gpa) && iova < BigInt(r.gpa + r.lenBytes))) return true;
    const r = mapIotlbEntry(this.ctx.native, { fd: this.dev, request: VDUSE_IOTLB_GET_FD }, Number(iova));
    if (!r) return false;
    this.regions.push(r);
    this.log.debug(describeIotlb(r.entry), 'IOTLB map');
    return true;
  }

  private unmapAll(): void {
    for (const r of this.regions) this.ctx.native.munmap(r.map.buffer, r.map.addr, r.mapLen);
    this.regions = [];
  }

  private iovaToHost(iova: bigint, len: number, writable: boolean): number {
    if (iova > BigInt(Number.MAX_SAFE_INTEGER) || !this.resolve(iova)) return -1;
    const a = Number(iova);
    for (const r of this.regions) {
      if (a >= r.gpa && a + len <= r.gpa + r.lenBytes) return writable && r.readonly ? -1 : r.hostAddr + (a - r.gpa);
    }
    return -1;
  }

  // ------------------------------------------------------------- queues

  private async startQueues(): Promise<void> {
    const n = this.ctx.native;
    const features = this.driverFeatures();
    const generation = ++this.starts;
    // First resolve every ring, so all queues of this start share one memory table.
    const packed = (features & bit(VIRTIO_F_RING_PACKED_BIT)) !== 0n;
    const rings: { i: number; size: number; desc: number; avail: number; used: number; info: ReturnType<typeof decodeVqInfo> }[] = [];
    for (let i = 0; i < this.vqs.length; i++) {
      if (this.vqs[i]!.running) continue;
      const buf = vqInfoBuffer(i);
      const rc = n.ioctl(this.dev, VDUSE_VQ_GET_INFO, buf);
      if (rc < 0) throw new Error(`VDUSE_VQ_GET_INFO ${i}: ${errnoName(-rc)}`);
      const info = decodeVqInfo(buf);
      if (!info.ready) continue; // the driver did not set this queue up
      const size = info.num;
      // Split: descriptor table, avail ring, used ring. Packed: descriptor ring,
      // driver and device event suppression areas (4 bytes each).
      const desc = this.iovaToHost(info.descAddr, 16 * size, false);
      const avail = this.iovaToHost(info.driverAddr, packed ? 4 : 6 + 2 * size, false);
      const used = this.iovaToHost(info.deviceAddr, packed ? 4 : 6 + 8 * size, true);
      if (desc < 0 || avail < 0 || used < 0) throw new Error(`queue ${i}: ring addresses are not mapped by the IOTLB`);
      rings.push({ i, size, desc, avail, used, info });
    }
    const regions = this.regions.map(({ gpa, uva, hostAddr, lenBytes, readonly }) => ({ gpa, uva, hostAddr, lenBytes, readonly }));
    const maps = this.regions.map((m) => m.map);
    const queueSize = this.ctx.opts.queueSize;
    for (const r of rings) {
      const vq = this.vqs[r.i]!;
      // Where the ring resumes: the in-flight log knows what was taken and not
      // completed (a previous vdx's, or ours after our own stop); a fresh region
      // starts where the driver set the queue (virtio_vdpa: 0, wrap counters 1;
      // vhost-vdpa: SET_VRING_BASE), or where our own stop left it.
      const reg = this.state.region(r.i, queueSize);
      let lastAvail: number;
      let usedIdx: number;
      let rec: { resubmit: number[]; nextCounter: number; inherited: boolean };
      if (packed) {
        const base = vq.resume ? (vq.lastAvail | (vq.lastUsed << 16)) >>> 0 : (r.info.packedAvail | (r.info.packedUsed << 16)) >>> 0;
        const p = recoverPacked(reg.buffer, reg.offset, queueSize, r.size, (pos) => readMappedU16(maps, r.desc + 16 * pos + 14), base);
        if (typeof p === 'string') throw new Error(`queue ${r.i}: ${p}; the queue is not started`);
        lastAvail = p.availState;
        usedIdx = p.usedState;
        rec = p;
      } else {
        const used = readMappedU16(maps, r.used + 2);
        if (used === undefined) throw new Error(`queue ${r.i}: used ring is not mapped`);
        const sp = recoverSplit(reg.buffer, reg.offset, queueSize, r.size, used);
        if (typeof sp === 'string') throw new Error(`queue ${r.i}: ${sp}; the queue is not started`);
        lastAvail = sp.inherited ? sp.lastAvail : vq.resume ? vq.lastAvail : r.info.availIndex;
        usedIdx = used;
        rec = sp;
      }
      const kick = n.ioctl(this.dev, VDUSE_VQ_SETUP_KICKFD, encodeVqEventfd(r.i, vq.kickFd));
      if (kick < 0) throw new Error(`VDUSE_VQ_SETUP_KICKFD ${r.i}: ${errnoName(-kick)}`);
      const id = `${this.name}#${generation}/${r.i}`;
      const spec: QueueSpec = {
        id,
        device: `${this.name}#${generation}`,
        memory: { generation, regions, iotlb: { fd: this.dev, request: VDUSE_IOTLB_GET_FD } },
        size: r.size,
        packed,
        descAddr: r.desc,
        availAddr: r.avail,
        usedAddr: r.used,
        eventIdx: (features & bit(VIRTIO_RING_F_EVENT_IDX_BIT)) !== 0n,
        indirect: (features & bit(VIRTIO_RING_F_INDIRECT_DESC_BIT)) !== 0n,
        lastAvail,
        usedIdx,
        inflight: { addr: reg.addr, descNum: queueSize, resubmit: rec.resubmit, nextCounter: rec.nextCounter },
        kickFd: vq.kickFd,
        callFd: -1,
        irq: { fd: this.dev, request: VDUSE_VQ_INJECT_IRQ, arg: r.i },
        bdev: this.ctx.bdev,
        blk: this.ctx.blk,
        counters: this.ctx.counters?.forQueue(this.name, this.ctx.bdev.info.name, 'vduse', r.i),
        ...(this.ctx.coalescing ? { coalescing: this.ctx.coalescing } : {}),
      };
      const host = this.ctx.pool.pick();
      this.unregister.set(r.i, this.ctx.onBroken(id, (why) => this.log.error({ queue: r.i }, `queue broken: ${why}`)));
      await host.addQueue(spec);
      vq.running = { host, id };
      vq.resume = false;
      // A driver that queued requests before its kick fd was set (or while no
      // vdx read it) gets a first look; one interrupt shows it completions a
      // previous vdx wrote just before it died.
      n.eventfdWrite(vq.kickFd, 1);
      const irq = new Uint8Array(4);
      new DataView(irq.buffer).setUint32(0, r.i, true);
      const irc = n.ioctl(this.dev, VDUSE_VQ_INJECT_IRQ, irq);
      if (irc < 0) this.log.warn({ queue: r.i }, `VDUSE_VQ_INJECT_IRQ: ${errnoName(-irc)}`);
      if (rec.inherited && (rec.resubmit.length > 0 || this.reattached)) {
        this.log.info({ queue: r.i, lastAvail, usedIdx, resubmitted: rec.resubmit.length }, 'queue resumed from the in-flight log');
      }
      this.log.info({ queue: r.i, size: r.size, packed, reactor: host.index, base: lastAvail }, 'queue started');
    }
  }

  private async stopQueues(): Promise<void> {
    for (let i = 0; i < this.vqs.length; i++) {
      const vq = this.vqs[i]!;
      if (!vq.running) continue;
      const { host, id } = vq.running;
      vq.running = undefined;
      const st = await host.stopQueue(id);
      vq.lastAvail = st.lastAvail;
      vq.lastUsed = st.usedIdx;
      vq.resume = true;
      this.unregister.get(i)?.();
      this.unregister.delete(i);
      this.log.info({ queue: i, base: vq.lastAvail }, 'queue stopped');
    }
  }

  // ------------------------------------------------------------- config, teardown

  /** New capacity (bytes): rewrite the config space (and the record) and tell the driver. */
  setCapacity(sizeBytes: number): void {
    const n = this.ctx.native;
    const sectors = sizeBytes / 512;
    const b = new Uint8Array(8 + 8);
    const v = new DataView(b.buffer);
    v.setUint32(0, 0, true); // offset of capacity
    v.setUint32(4, 8, true);
    v.setUint32(8, sectors % 2 ** 32, true);
    v.setUint32(12, Math.floor(sectors / 2 ** 32), true);
    let rc = n.ioctl(this.dev, VDUSE_DEV_SET_CONFIG, b);
    if (rc < 0) throw new Error(`VDUSE_DEV_SET_CONFIG: ${errnoName(-rc)}`);
    this.config.set(b.subarray(8), 0);
    this.state.writeRecord(this.record());
    rc = n.ioctl(this.dev, VDUSE_DEV_INJECT_CONFIG_IRQ, null);
    if (rc < 0) throw new Error(`VDUSE_DEV_INJECT_CONFIG_IRQ: ${errnoName(-rc)}`);
  }

  /** Interrupt the driver again for the config it has (it re-reads it; an unchanged capacity changes nothing). */
  announceConfig(): void {
    const rc = this.ctx.native.ioctl(this.dev, VDUSE_DEV_INJECT_CONFIG_IRQ, null);
    if (rc < 0) throw new Error(`VDUSE_DEV_INJECT_CONFIG_IRQ: ${errnoName(-rc)}`);
  }

  /** Stop serving and destroy the device; the caller has taken it off the vDPA bus. False if there was none. */
  async destroy(): Promise<boolean> {
    if (this.ctl < 0) return false;
    await this.quiesce();
    this.destroyDevice();
    this.state.remove();
    return true;
  }

  /**
   * Stop serving but leave the device (for a vdx that starts after this one):
   * in-flight I/O drains, the log stays with the status and the rings'
   * progress, /dev/vdX or /dev/vhost-vdpa-N stays where it is. False if there
   * was no device.
   */
  async detach(): Promise<boolean> {
    if (this.dev < 0) return false;
    await this.quiesce();
    const n = this.ctx.native;
    for (const vq of this.vqs.splice(0)) n.close(vq.kickFd);
    closeSync(this.dev);
    this.dev = -1;
    if (this.ctl >= 0) {
      closeSync(this.ctl);
      this.ctl = -1;
    }
    this.state.closeLog();
    return true;
  }

  /** No more messages answered, queues stopped once their I/O drained, mappings gone. */
  private async quiesce(): Promise<void> {
    await this.chain;
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    await this.stopQueues();
    this.unmapAll();
  }

  private destroyDevice(): void {
    const n = this.ctx.native;
    for (const vq of this.vqs.splice(0)) n.close(vq.kickFd);
    if (this.dev >= 0) {
      closeSync(this.dev);
      this.dev = -1;
    }
    if (this.ctl >= 0) {
      const rc = n.ioctl(this.ctl, VDUSE_DESTROY_DEV, encodeName(this.name));
      // Keep the control fd: destroy() again retries the ioctl.
      if (rc < 0) throw new Error(`VDUSE_DESTROY_DEV ${this.name}: ${errnoName(-rc)}${rc === -E.EBUSY ? ' (still on the vDPA bus?)' : ''}`);
      closeSync(this.ctl);
      this.ctl = -1;
    }
  }
}
