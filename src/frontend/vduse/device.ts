// A VDUSE virtio-blk device (Documentation/userspace-api/vduse.rst): created on
// /dev/vduse/control, served from /dev/vduse/$NAME. The main thread answers the
// kernel's control messages (status, vq state, IOTLB updates) promptly and hands
// started queues to reactors; it never touches a request.
import { closeSync, constants as FS, existsSync, openSync } from 'node:fs';
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
  opts: BlkExportOptions & { vduseName: string; packed: boolean };
  /** reactors report broken queues through the export */
  onBroken: (id: string, handler: (why: string) => void) => () => void;
  /** I/O counter buffers, one per queue index for the export's life; absent: counted privately */
  counters?: QueueCounterSource;
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

  constructor(private readonly ctx: VduseDeviceContext) {
    this.log = ctx.log;
    // ACCESS_PLATFORM is mandatory for VDUSE; CONFIG_WCE is refused (blkFeatures never offers it).
    this.offered =
      blkFeatures(ctx.blk, ctx.opts.numQueues) | bit(VIRTIO_F_ACCESS_PLATFORM_BIT) | (ctx.opts.packed ? bit(VIRTIO_F_RING_PACKED_BIT) : 0n);
    this.config = blkConfig(ctx.blk, ctx.opts);
  }

  get name(): string {
    return this.ctx.opts.vduseName;
  }

  /** This process created /dev/vduse/NAME (and so owns its place on the bus). */
  get created(): boolean {
    return this.dev >= 0;
  }

  /** Create /dev/vduse/NAME, set up every queue and start answering the kernel. */
  create(): void {
    const n = this.ctx.native;
    if (!existsSync(VDUSE_CONTROL)) throw new Error(`${VDUSE_CONTROL} is missing: ${VDPA_MODULE_HINT}`);
    this.ctl = openSync(VDUSE_CONTROL, FS.O_RDWR);
    const ver = new Uint8Array(8);
    new DataView(ver.buffer).setBigUint64(0, BigInt(VDUSE_API_VERSION), true);
    let rc = n.ioctl(this.ctl, VDUSE_SET_API_VERSION, ver);
    if (rc < 0) throw this.fail(`VDUSE_SET_API_VERSION: ${errnoName(-rc)}`);
    const cfg = encodeDevConfig({
      name: this.name,
      deviceId: VIRTIO_ID_BLOCK,
      features: this.offered,
      vqNum: this.ctx.opts.numQueues,
      vqAlign: VQ_ALIGN,
      config: this.config,
    });
    rc = n.ioctl(this.ctl, VDUSE_CREATE_DEV, cfg);
    if (rc === -E.EEXIST) throw this.fail(`a VDUSE device named '${this.name}' already exists; choose another name=`);
    if (rc < 0) throw this.fail(`VDUSE_CREATE_DEV ${this.name}: ${errnoName(-rc)}`);
    try {
      this.dev = openSync(`/dev/vduse/${this.name}`, FS.O_RDWR | FS.O_NONBLOCK);
      for (let i = 0; i < this.ctx.opts.numQueues; i++) {
        rc = n.ioctl(this.dev, VDUSE_VQ_SETUP, encodeVqConfig(i, this.ctx.opts.queueSize));
        if (rc < 0) throw new Error(`VDUSE_VQ_SETUP ${i}: ${errnoName(-rc)}`);
        const kickFd = n.eventfd(0, n.EFD_NONBLOCK | n.EFD_CLOEXEC);
        this.vqs.push({ kickFd, running: undefined, lastAvail: 0, lastUsed: 0, resume: false });
      }
    } catch (e) {
      try {
        this.destroyDevice();
      } catch (d) {
        this.log.error((d as Error).message);
      }
      throw this.fail((e as Error).message);
    }
    // Messages arrive while the device is being added to the bus: serve them from now on.
    this.watcher = new n.FdWatcher(this.dev);
    this.watcher.start(true, false, () => this.readable());
    this.log.info({ queues: this.ctx.opts.numQueues, queueSize: this.ctx.opts.queueSize }, `VDUSE device /dev/vduse/${this.name} created`);
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
    for (const r of rings) {
      const vq = this.vqs[r.i]!;
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
        // The kernel's state is what the driver set (virtio_vdpa: wrap counters 1;
        // vhost-vdpa: SET_VRING_BASE); after our own stop, ours is newer.
        lastAvail: vq.resume ? vq.lastAvail : packed ? r.info.packedAvail : r.info.availIndex,
        usedIdx: packed ? (vq.resume ? vq.lastUsed : r.info.packedUsed) : (readMappedU16(this.regions.map((m) => m.map), r.used + 2) ?? 0),
        kickFd: vq.kickFd,
        callFd: -1,
        irq: { fd: this.dev, request: VDUSE_VQ_INJECT_IRQ, arg: r.i },
        bdev: this.ctx.bdev,
        blk: this.ctx.blk,
        counters: this.ctx.counters?.forQueue(this.name, this.ctx.bdev.info.name, 'vduse', r.i),
      };
      const host = this.ctx.pool.pick();
      this.unregister.set(r.i, this.ctx.onBroken(id, (why) => this.log.error({ queue: r.i }, `queue broken: ${why}`)));
      await host.addQueue(spec);
      vq.running = { host, id };
      vq.resume = false;
      // A driver that queued requests before its kick fd was set gets a first look.
      n.eventfdWrite(vq.kickFd, 1);
      this.log.info({ queue: r.i, size: r.size, packed, reactor: host.index, base: spec.lastAvail }, 'queue started');
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

  /** New capacity (bytes): rewrite the config space and tell the driver. */
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
    rc = n.ioctl(this.dev, VDUSE_DEV_INJECT_CONFIG_IRQ, null);
    if (rc < 0) throw new Error(`VDUSE_DEV_INJECT_CONFIG_IRQ: ${errnoName(-rc)}`);
  }

  /** Stop serving and destroy the device; the caller has taken it off the vDPA bus. False if there was none. */
  async destroy(): Promise<boolean> {
    if (this.ctl < 0) return false;
    await this.chain;
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    await this.stopQueues();
    this.unmapAll();
    this.destroyDevice();
    return true;
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
