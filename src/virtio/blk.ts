// The virtio-blk request engine for one queue (virtio 1.2 §5.2.6): turns
// descriptor chains into bdev I/O and completes every popped head exactly once.
// Runs on a reactor thread; no allocation per request.
import { BdevIo, type Channel, IoOp, MAX_IOV } from '../bdev/types.js';
import { QosGate } from '../bdev/qos.js';
import {
  VIRTIO_BLK_DISCARD_SEG_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_REQ_HDR_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from './constants.js';
import {
  IoClock,
  latencyBucket,
  OP_DISCARD,
  OP_FLUSH,
  OP_OTHER,
  OP_READ,
  OP_SLOTS,
  OP_WRITE,
  OP_WRITE_ZEROES,
  Q_IO_NOW,
  Q_IO_TIME_NS,
  Q_LAT_BUCKETS,
  Q_LAT_SUM_NS,
  Q_SLOTS,
  X_BYTES,
  X_ERRORS,
  X_OPS,
  X_TIME_NS,
} from './blk-counters.js';
import { type GuestMemory, SEG_STRIDE } from './memory.js';
import { IrqCoalescer } from './coalescing.js';
import { BROKEN, NO_HEAD } from './split-ring.js';
import type { Virtqueue } from './virtqueue.js';

/** Segments one chain may map to: data (MAX_IOV) plus header, status, and region splits. */
export const MAX_SEGS = MAX_IOV + 8;

/**
 * Heads one poll() takes while the driver polls the used ring itself, and
 * while it sleeps until interrupted. A sleeping driver is woken by the first
 * completions the pass publishes, and refills the ring while this one goes on:
 * with a pass of 64, it slept through all 32 of a QD32 batch and the two sides
 * took turns; 8 at a time overlaps them (libblkio QD32, waiting client, one
 * reactor: null 1.07 -> 1.39 M IOPS, RAM disk 0.48 -> 0.80 M). 12 keeps the
 * overlap for a third fewer interrupts: against 8, pinned, medians of 5
 * per-round ratios, RAM disk QD32/QD128 x 1/2 queues 1.09-1.12, null
 * 0.97-1.08 (interrupts per I/O 0.125 -> 0.083 on the RAM disk). A polling
 * driver gains nothing from the overlap and the pass amortises better, so it
 * keeps 64.
 * A waiting driver asks for one interrupt per batch it sleeps on, and none for
 * what completes before it has looked, so the queue counts it as waiting for
 * WAITING_PUBLISHES publishes after each interrupt it asked for.
 */
const POLLING_BUDGET = 64;
const WAITING_BUDGET = 12;
const WAITING_PUBLISHES = 16;

/** What the engine needs to know of the device it serves. */
export interface BlkParams {
  sizeBytes: number;
  /** logical block size: offsets and lengths must be multiples */
  blockSize: number;
  readonly: boolean;
  discard: boolean;
  writeZeroes: boolean;
  /** per-segment limit for DISCARD / WRITE_ZEROES, in 512-byte sectors */
  maxDiscardSectors: number;
  maxWriteZeroesSectors: number;
  maxDiscardSeg: number;
  maxWriteZeroesSeg: number;
  /** GET_ID answer, ASCII, at most 20 bytes */
  serial: string;
}

export class BlkRequest {
  head = 0;
  inflight = false;
  type = 0;
  /** where the status byte goes: window index (-1: nowhere) and offset */
  statusWindow = -1;
  statusOffset = 0;
  usedLen = 0;
  readableBytes = 0;
  writableBytes = 0;
  /** DISCARD / WRITE_ZEROES: segments in the request and the next to submit */
  rangeCount = 0;
  rangeNext = 0;
  /** the ranges, copied out of guest memory once validated (made on first use) */
  ranges: DataView | undefined;
  /** counters: op class (OP_*), data bytes, and the IoClock reading at pop */
  cls = OP_OTHER;
  bytes = 0;
  startMs = 0;
  /** completed with `doneStatus`, not yet in the counters (BlkQueue.account) */
  unaccounted = false;
  doneStatus = 0;
  readonly io = new BdevIo();
}

export interface BlkQueueHooks {
  /** The ring is unusable (guest bug or attack): the transport must flag the device. */
  broken(why: string): void;
}

export interface BlkQueueOptions {
  /** the bdev's QoS state (bdev/qos.ts): requests over its limits wait in this queue until their tokens are there */
  qos?: SharedArrayBuffer;
  /**
   * Where to count (layout in blk-counters.ts): a buffer the main thread
   * allocated and reads; this queue is its only writer. Absent: a private one.
   */
  counters?: SharedArrayBuffer;
  /**
   * The reactor's clock, shared by its queues; the reactor then calls
   * account() at the end of each pass. Absent: the queue's own, and flush()
   * accounts.
   */
  clock?: IoClock;
  /** the export's interrupt coalescing settings (coalescing.ts); absent: every interrupt the driver wants goes at once */
  coalescing?: SharedArrayBuffer;
}

export class BlkQueue {
  private readonly reqs: BlkRequest[];
  /**
   * The chain being parsed. Only start() reads it: everything a request needs
   * later (iov, status location, ranges) is copied into the request, so one
   * scratch table serves the whole queue.
   */
  private readonly segs = new Float64Array(SEG_STRIDE * MAX_SEGS);
  private nseg = 0;
  private readonly scratch = new Uint8Array(16);
  private readonly scratchDv = new DataView(this.scratch.buffer);
  private readonly serialBytes: Uint8Array;
  private inflightCount = 0;
  /** counters for metrics and tests */
  completed = 0;
  failed = 0;
  /** the counters (blk-counters.ts), written with plain stores on this thread only */
  private c: Float64Array;
  private readonly clock: IoClock;
  /** no reactor drives this clock: poll() begins passes, flush() accounts */
  private readonly ownClock: boolean;
  /** clock reading when Q_IO_TIME_NS was last brought up to date */
  private ioTickMs = 0;
  /** heads completed since the last account(), in completion order */
  private readonly doneHeads: Int32Array;
  private ndone = 0;
  private readonly onIoDone = (io: BdevIo): void => this.ioDone(io);
  private readonly qos: QosGate | undefined;
  /** heads held back by QoS, oldest first (a ring of the queue's size) */
  private readonly throttled: Int32Array;
  private throttledHead = 0;
  private throttledCount = 0;
  /** publishes left until the driver counts as polling again (see WAITING_PUBLISHES) */
  private waitingPublishes = 0;
  private readonly coalescer: IrqCoalescer;

  constructor(
    readonly ring: Virtqueue,
    private readonly mem: GuestMemory,
    private readonly channel: Channel,
    private p: BlkParams,
    private readonly hooks: BlkQueueHooks,
    opts: BlkQueueOptions = {},
  ) {
    this.c = new Float64Array(opts.counters ?? new ArrayBuffer(Q_SLOTS * 8), 0, Q_SLOTS);
    this.clock = opts.clock ?? new IoClock();
    this.ownClock = opts.clock === undefined;
    this.doneHeads = new Int32Array(ring.size);
    this.qos = opts.qos ? new QosGate(opts.qos) : undefined;
    this.coalescer = new IrqCoalescer(opts.coalescing);
    this.throttled = new Int32Array(opts.qos ? ring.size : 0);
    this.reqs = [];
    for (let i = 0; i < ring.size; i++) {
      const r = new BlkRequest();
      r.head = i;
      r.io.ctx = r;
      r.io.slot = i;
      r.io.done = this.onIoDone;
      this.reqs.push(r);
    }
    this.serialBytes = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    for (let i = 0; i < Math.min(p.serial.length, VIRTIO_BLK_ID_BYTES); i++) this.serialBytes[i] = p.serial.charCodeAt(i) & 0x7f;
  }

  inflight(): number {
    return this.inflightCount;
  }

  /**
   * The queue is stopping for good: zero its in-flight gauge and count
   * anything that still completes (a broken queue stopped with I/O in flight)
   * where nobody reads, so the next queue on the same buffer stays its only writer.
   */
  detachCounters(): void {
    this.account(this.clock.now());
    this.c[Q_IO_NOW] = 0;
    this.c = new Float64Array(Q_SLOTS);
  }

  /** The bdev was resized: later requests are checked against the new capacity. */
  setSize(sizeBytes: number): void {
    this.p = { ...this.p, sizeBytes: sizeBytes - (sizeBytes % this.p.blockSize) };
  }

  /** Pop and dispatch what the driver made available. Returns how many heads were taken (0 = idle). */
  poll(budget = this.waitingPublishes > 0 ? WAITING_BUDGET : POLLING_BUDGET): number {
    let n = 0;
    const ring = this.ring;
    const clock = this.clock;
    // Requests popped now share one reading (taken on the first pop, or the
    // reactor's seed); leaving, invalidate it for whoever pops next (see IoClock).
    if (this.ownClock) clock.beginPass();
    if (this.throttledCount > 0) n += this.releaseThrottled();
    while (n < budget) {
      const head = ring.pop(this.segs, MAX_SEGS);
      if (head === NO_HEAD) break;
      if (head === BROKEN) {
        this.hooks.broken(ring.broken ?? 'ring broken');
        break;
      }
      n++;
      const r = this.reqs[head]!;
      if (r.inflight) {
        ring.broken = `driver made descriptor ${head} available again while it was in flight`;
        this.hooks.broken(ring.broken);
        break;
      }
      const now = clock.now();
      if (r.unaccounted) this.accountReq(r, now); // popped again before the end of the pass
      if (this.inflightCount > 0) this.c[Q_IO_TIME_NS] += (now - this.ioTickMs) * 1e6;
      this.ioTickMs = now;
      r.startMs = now;
      r.inflight = true;
      this.c[Q_IO_NOW] = ++this.inflightCount;
      this.start(r);
    }
    clock.invalidate();
    return n;
  }

  /**
   * Publish completions; returns true when an interrupt is to be sent now: the
   * driver wants one and coalescing does not hold it back, or one held back
   * is due.
   */
  flush(): boolean {
    const wanted = this.ring.publish();
    if (wanted) this.waitingPublishes = WAITING_PUBLISHES;
    else if (this.waitingPublishes > 0 && this.ndone > 0) this.waitingPublishes--;
    if (this.ownClock && this.ndone > 0) this.account(this.clock.now());
    const co = this.coalescer;
    if (!co.isOwed && (!wanted || !co.enabled)) return wanted;
    return co.due(this.clock.now(), this.completed + this.failed);
  }

  /**
   * An interrupt coalescing held back goes now, whatever its delay: the
   * reactor is about to sleep, or the queue stops, and nothing else would
   * send it. Returns true when there was one to send.
   */
  takeOwedInterrupt(): boolean {
    return this.coalescer.isOwed && this.coalescer.takeOwed(this.clock.now());
  }

  /** When the interrupt coalescing holds back falls due (an IoClock reading), or -1 when none is held. */
  owedInterruptDueMs(): number {
    return this.coalescer.owedDueMs;
  }

  /**
   * Count the requests completed since the last call as completed at `nowMs`
   * (an IoClock reading). The reactor calls it once per pass, after publishing
   * and interrupting, with the reading that ends the pass: completions cost no
   * clock reading of their own, and a latency runs to when the driver was told.
   */
  account(nowMs: number): void {
    const n = this.ndone;
    if (n === 0) return;
    this.ndone = 0;
    // Whatever completed was in flight since the last tick.
    this.c[Q_IO_TIME_NS] += (nowMs - this.ioTickMs) * 1e6;
    this.ioTickMs = nowMs;
    const reqs = this.reqs;
    const heads = this.doneHeads;
    for (let i = 0; i < n; i++) {
      const r = reqs[heads[i]!]!;
      if (r.unaccounted) this.accountReq(r, nowMs);
    }
  }

  private accountReq(r: BlkRequest, nowMs: number): void {
    r.unaccounted = false;
    const c = this.c;
    const ms = nowMs - r.startMs;
    const ns = ms * 1e6;
    const o = r.cls * OP_SLOTS;
    if (r.doneStatus === VIRTIO_BLK_S_OK) {
      c[o + X_OPS]++;
      c[o + X_BYTES] += r.bytes;
      c[o + X_TIME_NS] += ns;
    } else {
      c[o + X_ERRORS]++;
    }
    c[Q_LAT_SUM_NS] += ns;
    c[Q_LAT_BUCKETS + latencyBucket(ms)]++;
  }

  private start(r: BlkRequest): void {
    const nseg = this.ring.lastChain;
    r.statusWindow = -1;
    r.usedLen = 0;
    r.cls = OP_OTHER;
    r.bytes = 0;
    if (nseg < 0) {
      // Nowhere trustworthy to write a status: return the head, written length 0.
      this.finish(r, VIRTIO_BLK_S_IOERR);
      return;
    }
    this.nseg = nseg;
    let readable = 0;
    let writable = 0;
    const s = this.segs;
    for (let i = 0; i < nseg; i++) {
      const o = i * SEG_STRIDE;
      if (s[o + 3] === 1) writable += s[o + 2]!;
      else readable += s[o + 2]!;
    }
    r.readableBytes = readable;
    r.writableBytes = writable;
    if (writable === 0) {
      this.finish(r, VIRTIO_BLK_S_IOERR); // no status byte: the driver gets the head back, length 0
      return;
    }
    // The status byte is the last byte of the chain (§5.2.6).
    const last = (nseg - 1) * SEG_STRIDE;
    r.statusWindow = s[last]!;
    r.statusOffset = s[last + 1]! + s[last + 2]! - 1;
    r.usedLen = 1;
    if (readable < VIRTIO_BLK_REQ_HDR_SIZE) {
      this.finish(r, VIRTIO_BLK_S_IOERR); // header missing or in a device-writable buffer
      return;
    }
    // Drivers put the 16-byte header in a descriptor of its own: read it where
    // it lies; only a header split across descriptors is gathered into scratch.
    let dv: DataView = this.scratchDv;
    let at = 0;
    if (s[2]! >= VIRTIO_BLK_REQ_HDR_SIZE) {
      dv = this.mem.windows[s[0]!]!.dv;
      at = s[1]!;
    } else {
      this.copyOut(0, VIRTIO_BLK_REQ_HDR_SIZE);
    }
    r.type = dv.getUint32(at, true);
    const sectorLo = dv.getUint32(at + 8, true);
    const sectorHi = dv.getUint32(at + 12, true);
    const io = r.io;
    const p = this.p;
    switch (r.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT: {
        const isWrite = r.type === VIRTIO_BLK_T_OUT;
        r.cls = isWrite ? OP_WRITE : OP_READ;
        if (isWrite && p.readonly) return this.finish(r, VIRTIO_BLK_S_IOERR);
        const dataBytes = isWrite ? readable - VIRTIO_BLK_REQ_HDR_SIZE : writable - 1;
        if (!isWrite) r.usedLen = writable;
        // An IN with data in readable buffers, or an OUT with more than the status writable, is malformed.
        if ((isWrite && writable !== 1) || (!isWrite && readable !== VIRTIO_BLK_REQ_HDR_SIZE)) {
          return this.finish(r, VIRTIO_BLK_S_IOERR);
        }
        const off = this.sectorRange(sectorLo, sectorHi, dataBytes);
        if (off < 0) return this.finish(r, VIRTIO_BLK_S_IOERR);
        r.bytes = dataBytes;
        if (dataBytes === 0) return this.finish(r, VIRTIO_BLK_S_OK);
        const niov = isWrite ? this.buildIov(r, 0, VIRTIO_BLK_REQ_HDR_SIZE, readable) : this.buildIov(r, 1, 0, writable - 1);
        if (niov < 0) return this.finish(r, VIRTIO_BLK_S_IOERR);
        io.op = isWrite ? IoOp.WRITE : IoOp.READ;
        io.offsetBytes = off;
        io.lenBytes = dataBytes;
        io.niov = niov;
        return this.submit(r);
      }
      case VIRTIO_BLK_T_FLUSH:
        r.cls = OP_FLUSH;
        io.op = IoOp.FLUSH;
        io.offsetBytes = 0;
        io.lenBytes = 0;
        io.niov = 0;
        return this.submit(r);
      case VIRTIO_BLK_T_GET_ID: {
        const room = writable - 1;
        const n = Math.min(room, VIRTIO_BLK_ID_BYTES);
        this.copyIn(this.serialBytes, n);
        r.usedLen = writable;
        return this.finish(r, VIRTIO_BLK_S_OK);
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.startRanges(r);
      default:
        return this.finish(r, VIRTIO_BLK_S_UNSUPP);
    }
  }

  /** Byte offset of a sector range inside the device, or -1 (overflow-safe). */
  private sectorRange(lo: number, hi: number, lenBytes: number): number {
    if (hi >= 0x20_0000) return -1;
    const sector = hi * 0x1_0000_0000 + lo;
    if (sector > this.p.sizeBytes / VIRTIO_BLK_SECTOR_SIZE) return -1;
    const off = sector * VIRTIO_BLK_SECTOR_SIZE;
    // A power-of-two block size divides 2^32, so the low 32 bits decide
    // alignment: masks instead of % on doubles (an fmod call per request).
    // A module's odd block size takes the general test.
    const bs = this.p.blockSize;
    if ((bs & (bs - 1)) === 0 && bs >= VIRTIO_BLK_SECTOR_SIZE) {
      if ((lo & (bs / VIRTIO_BLK_SECTOR_SIZE - 1)) !== 0 || (lenBytes & (bs - 1)) !== 0) return -1;
    } else if (off % bs !== 0 || lenBytes % bs !== 0) return -1;
    if (off + lenBytes > this.p.sizeBytes) return -1;
    return off;
  }

  private startRanges(r: BlkRequest): void {
    const p = this.p;
    const isDiscard = r.type === VIRTIO_BLK_T_DISCARD;
    r.cls = isDiscard ? OP_DISCARD : OP_WRITE_ZEROES;
    if (!(isDiscard ? p.discard : p.writeZeroes)) return this.finish(r, VIRTIO_BLK_S_UNSUPP);
    if (p.readonly) return this.finish(r, VIRTIO_BLK_S_IOERR);
    const payload = r.readableBytes - VIRTIO_BLK_REQ_HDR_SIZE;
    if (r.writableBytes !== 1 || payload === 0 || payload % VIRTIO_BLK_DISCARD_SEG_SIZE !== 0) {
      return this.finish(r, VIRTIO_BLK_S_IOERR);
    }
    const count = payload / VIRTIO_BLK_DISCARD_SEG_SIZE;
    if (count > (isDiscard ? p.maxDiscardSeg : p.maxWriteZeroesSeg)) return this.finish(r, VIRTIO_BLK_S_UNSUPP);
    // Validate every range before touching any, so a bad request changes nothing.
    r.ranges ??= new DataView(new ArrayBuffer(VIRTIO_BLK_DISCARD_SEG_SIZE * Math.max(p.maxDiscardSeg, p.maxWriteZeroesSeg)));
    for (let i = 0; i < count; i++) {
      const st = this.checkRange(r, i);
      if (st !== VIRTIO_BLK_S_OK) return this.finish(r, st);
      for (let k = 0; k < VIRTIO_BLK_DISCARD_SEG_SIZE; k++) r.ranges.setUint8(i * VIRTIO_BLK_DISCARD_SEG_SIZE + k, this.scratch[k]!);
    }
    r.rangeCount = count;
    r.rangeNext = 0;
    this.submitNextRange(r);
  }

  /** Reads range i into scratch and checks it; returns a virtio status. */
  private checkRange(r: BlkRequest, i: number): number {
    this.copyOut(VIRTIO_BLK_REQ_HDR_SIZE + i * VIRTIO_BLK_DISCARD_SEG_SIZE, VIRTIO_BLK_DISCARD_SEG_SIZE);
    const dv = this.scratchDv;
    const sectors = dv.getUint32(8, true);
    const flags = dv.getUint32(12, true);
    const isDiscard = r.type === VIRTIO_BLK_T_DISCARD;
    // §5.2.6.2: unknown flags, or UNMAP on a DISCARD, are unsupported.
    if (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) return VIRTIO_BLK_S_UNSUPP;
    if (isDiscard && flags !== 0) return VIRTIO_BLK_S_UNSUPP;
    if (sectors > (isDiscard ? this.p.maxDiscardSectors : this.p.maxWriteZeroesSectors)) return VIRTIO_BLK_S_IOERR;
    if (this.sectorRange(dv.getUint32(0, true), dv.getUint32(4, true), sectors * VIRTIO_BLK_SECTOR_SIZE) < 0) {
      return VIRTIO_BLK_S_IOERR;
    }
    return VIRTIO_BLK_S_OK;
  }

  private submitNextRange(r: BlkRequest): void {
    const dv = r.ranges!;
    const at = r.rangeNext * VIRTIO_BLK_DISCARD_SEG_SIZE;
    const io = r.io;
    io.op = r.type === VIRTIO_BLK_T_DISCARD ? IoOp.DISCARD : IoOp.WRITE_ZEROES;
    io.offsetBytes = (dv.getUint32(at + 4, true) * 0x1_0000_0000 + dv.getUint32(at, true)) * VIRTIO_BLK_SECTOR_SIZE;
    io.lenBytes = dv.getUint32(at + 8, true) * VIRTIO_BLK_SECTOR_SIZE;
    io.unmap = (dv.getUint32(at + 12, true) & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0;
    io.niov = 0;
    r.rangeNext++;
    r.bytes += io.lenBytes;
    if (io.lenBytes === 0) {
      this.ioDoneStatus(r, 0);
      return;
    }
    this.submit(r);
  }

  private submit(r: BlkRequest): void {
    const qos = this.qos;
    if (qos !== undefined && qos.limited() && (this.throttledCount > 0 || !qos.admit(r.io))) {
      this.throttled[(this.throttledHead + this.throttledCount++) % this.throttled.length] = r.head;
      return;
    }
    const rc = this.channel.submit(r.io);
    if (rc < 0) this.finish(r, VIRTIO_BLK_S_IOERR);
  }

  /**
   * Send on what QoS held back, in order, while the limits allow (the reactor
   * calls it every pass, stopping queues included). Returns how many went.
   */
  releaseThrottled(): number {
    const qos = this.qos;
    let n = 0;
    while (this.throttledCount > 0) {
      const r = this.reqs[this.throttled[this.throttledHead]!]!;
      if (qos!.limited() && !qos!.admit(r.io)) break;
      this.throttledHead = (this.throttledHead + 1) % this.throttled.length;
      this.throttledCount--;
      n++;
      const rc = this.channel.submit(r.io);
      if (rc < 0) this.finish(r, VIRTIO_BLK_S_IOERR);
    }
    return n;
  }

  /** ms until QoS lets the oldest held request go, or -1 when none is held. */
  throttledWaitMs(): number {
    return this.throttledCount > 0 ? this.qos!.waitMs : -1;
  }

  private ioDone(io: BdevIo): void {
    this.ioDoneStatus(io.ctx as BlkRequest, io.status);
  }

  private ioDoneStatus(r: BlkRequest, status: number): void {
    if (status === 0 && r.rangeNext < r.rangeCount && (r.type === VIRTIO_BLK_T_DISCARD || r.type === VIRTIO_BLK_T_WRITE_ZEROES)) {
      this.submitNextRange(r);
      return;
    }
    this.finish(r, status === 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR);
  }

  private finish(r: BlkRequest, status: number): void {
    if (r.statusWindow >= 0) this.mem.windows[r.statusWindow]!.u8[r.statusOffset] = status;
    r.rangeCount = 0;
    r.rangeNext = 0;
    r.inflight = false;
    if (status === VIRTIO_BLK_S_OK) this.completed++;
    else this.failed++;
    this.c[Q_IO_NOW] = --this.inflightCount;
    // Counted at account(); a full list (poll() called again and again without flush) is counted now.
    if (this.ndone === this.doneHeads.length) this.account(this.clock.now());
    r.doneStatus = status;
    r.unaccounted = true;
    this.doneHeads[this.ndone++] = r.head;
    this.ring.push(r.head, r.usedLen);
  }

  /** Copy `len` (≤ 16) readable bytes of the chain being parsed, from readable offset `from`, into scratch. */
  private copyOut(from: number, len: number): void {
    const s = this.segs;
    let pos = 0;
    let got = 0;
    for (let i = 0; i < this.nseg && got < len; i++) {
      const o = i * SEG_STRIDE;
      if (s[o + 3] === 1) break;
      const segLen = s[o + 2]!;
      if (pos + segLen > from) {
        const u8 = this.mem.windows[s[o]!]!.u8;
        const segOff = s[o + 1]!;
        for (let k = Math.max(0, from + got - pos); k < segLen && got < len; k++) this.scratch[got++] = u8[segOff + k]!;
      }
      pos += segLen;
    }
  }

  /** Copy `len` bytes of `src` to the start of the writable part of the chain being parsed. */
  private copyIn(src: Uint8Array, len: number): void {
    const s = this.segs;
    let put = 0;
    for (let i = 0; i < this.nseg && put < len; i++) {
      const o = i * SEG_STRIDE;
      if (s[o + 3] !== 1) continue;
      const u8 = this.mem.windows[s[o]!]!.u8;
      const segOff = s[o + 1]!;
      const segLen = s[o + 2]!;
      for (let k = 0; k < segLen && put < len; k++) u8[segOff + k] = src[put++]!;
    }
  }

  /**
   * Fill r.io.iov with the host ranges of bytes [from, to) of the readable
   * (writable=0) or writable (1) part. Returns the iov count or -1 if too many.
   */
  private buildIov(r: BlkRequest, writable: number, from: number, to: number): number {
    const s = this.segs;
    const iov = r.io.iov;
    let pos = 0;
    let n = 0;
    for (let i = 0; i < this.nseg && pos < to; i++) {
      const o = i * SEG_STRIDE;
      if (s[o + 3] !== writable) continue;
      const segLen = s[o + 2]!;
      const a = Math.max(from, pos);
      const b = Math.min(to, pos + segLen);
      if (b > a) {
        if (n >= MAX_IOV) return -1;
        iov[2 * n] = this.mem.windows[s[o]!]!.hostAddr + s[o + 1]! + (a - pos);
        iov[2 * n + 1] = b - a;
        n++;
      }
      pos += segLen;
    }
    return n;
  }
}
