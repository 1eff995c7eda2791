// delay bdev: adds latency to reads and writes, as SPDK's delay module does:
// when the base completes an I/O, it is held for the average latency, or for
// the p99 latency one time in a hundred, then completed. Other I/O (flush,
// discard, write-zeroes) passes at once. The latencies live in memory shared
// by every reactor's channel, so bdev_delay_update_latency changes them at run
// time. A held I/O does not keep the reactor spinning: the channel's timerfd
// is its notify fd and the held I/O counts as owed by the kernel, so the
// reactor sleeps until the earliest one is due.
import { performance } from 'node:perf_hooks';
import { loadNet, type NetShim } from '../native/net.js';
import { IoFifo } from './deferred.js';
import { ForwardChannel, layerSpec, windowInfo } from './layer.js';
import { type BdevDesc, type BdevIo, type BdevModule, type Channel, type ChannelContext, IoOp } from './types.js';

/** Slots of the shared Int32Array, in µs. */
export const DELAY_KEYS = ['avg-read-latency', 'p99-read-latency', 'avg-write-latency', 'p99-write-latency'] as const;
export type DelayKey = (typeof DELAY_KEYS)[number];
const AVG_READ = 0;
const P99_READ = 1;
const AVG_WRITE = 2;
const P99_WRITE = 3;
/** Ten minutes: longer is a stuck I/O, which the error bdev makes. */
export const MAX_DELAY_US = 600_000_000;

export function parseLatency(key: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) > MAX_DELAY_US) throw new Error(`delay: ${key}=${v} must be a whole number of µs in 0..${MAX_DELAY_US}`);
  return Number(v);
}

/** Refuse a p99 below its average (SPDK refuses it too). */
export function checkLatencies(l: Record<DelayKey, number>): void {
  if (l['p99-read-latency'] < l['avg-read-latency']) throw new Error(`delay: p99-read-latency=${l['p99-read-latency']} is below avg-read-latency=${l['avg-read-latency']}; a p99 is at least the average`);
  if (l['p99-write-latency'] < l['avg-write-latency']) throw new Error(`delay: p99-write-latency=${l['p99-write-latency']} is below avg-write-latency=${l['avg-write-latency']}; a p99 is at least the average`);
}

class DelayChannel extends ForwardChannel {
  override readonly notifyFd: number;
  private readonly net: NetShim = loadNet();
  private readonly us: Int32Array;
  /** held children by kind (avg/p99 x read/write): each in due order, as its latency is one value */
  private readonly held = [new IoFifo(64), new IoFifo(64), new IoFifo(64), new IoFifo(64)];
  private heldCount = 0;
  /** due time (performance.now() ms) by child slot */
  private due = new Float64Array(64);
  /** when the timerfd fires next; Infinity: disarmed */
  private armedAt = Infinity;
  /** xorshift32: a p99 pick per I/O without Math.random's cost */
  private seed = (Date.now() ^ 0x9e3779b9) | 1;

  constructor(base: Channel, baseDesc: BdevDesc, ctx: ChannelContext, desc: BdevDesc) {
    super(base, baseDesc, ctx, 0, desc.info.sizeBytes);
    this.us = new Int32Array(desc.shared!);
    this.notifyFd = this.net.timerfdCreate();
  }

  protected override baseDone(child: BdevIo): void {
    const op = child.op;
    // Closed (its queue broke and went): the timerfd is gone, nothing is held any more.
    if ((op !== IoOp.READ && op !== IoOp.WRITE) || this.isClosed) return this.finish(child);
    let s = this.seed;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.seed = s;
    const p99 = (s >>> 0) % 100 === 0;
    const kind = op === IoOp.READ ? (p99 ? P99_READ : AVG_READ) : p99 ? P99_WRITE : AVG_WRITE;
    const us = this.us[kind]!;
    if (us === 0) return this.finish(child);
    if (child.slot >= this.due.length) {
      const next = new Float64Array(Math.max(this.poolSize, 2 * this.due.length));
      next.set(this.due);
      this.due = next;
    }
    const now = performance.now();
    const at = now + us / 1000;
    this.due[child.slot] = at;
    this.held[kind]!.push(child);
    this.heldCount++;
    if (at < this.armedAt) this.arm(at, now);
  }

  private arm(at: number, now: number): void {
    this.armedAt = at;
    this.net.timerfdSet(this.notifyFd, Math.max(at - now, 0.001));
  }

  override poll(): number {
    this.raiseDeferred();
    if (this.heldCount === 0) return 0;
    const now = performance.now();
    let ran = 0;
    let next = Infinity;
    for (let k = 0; k < 4; k++) {
      const q = this.held[k]!;
      for (let head = q.peek(); head !== undefined; head = q.peek()) {
        const at = this.due[head.slot]!;
        if (at > now) {
          if (at < next) next = at;
          break;
        }
        q.shift();
        this.heldCount--;
        this.finish(head);
        ran++;
      }
    }
    if (this.heldCount > 0 && (this.armedAt === Infinity || next < this.armedAt)) this.arm(next, now);
    return ran;
  }

  /** Held I/O waits on the timer, so the reactor may sleep. */
  override kernelInflight(): number {
    return this.heldCount;
  }

  override clearNotify(): void {
    this.net.timerfdRead(this.notifyFd);
    this.armedAt = Infinity;
  }

  override close(): void {
    if (this.isClosed) return;
    // Only a broken queue leaves I/O held here (a stopping one waits for it):
    // its memory may be gone, so the held I/O is dropped, not completed.
    for (const q of this.held) while (q.shift());
    this.heldCount = 0;
    this.net.close(this.notifyFd);
    super.close();
  }
}

export const delayBdev: BdevModule = {
  type: 'delay',
  keys: {
    name: 'bdev name (required)',
    base: 'the bdev it delays (required); claimed for writing while the delay exists',
    'avg-read-latency': 'µs added to reads (default 0)',
    'p99-read-latency': 'µs added to one read in 100 (default: avg-read-latency)',
    'avg-write-latency': 'µs added to writes (default 0)',
    'p99-write-latency': 'µs added to one write in 100 (default: avg-write-latency)',
  },
  baseKeys: ['base'],
  normalize(spec) {
    const { name, base } = layerSpec('delay', spec, delayBdev.keys);
    const avgR = parseLatency('avg-read-latency', spec['avg-read-latency'], 0);
    const avgW = parseLatency('avg-write-latency', spec['avg-write-latency'], 0);
    const l = {
      'avg-read-latency': avgR,
      'p99-read-latency': parseLatency('p99-read-latency', spec['p99-read-latency'], avgR),
      'avg-write-latency': avgW,
      'p99-write-latency': parseLatency('p99-write-latency', spec['p99-write-latency'], avgW),
    };
    checkLatencies(l);
    return { name, base, ...Object.fromEntries(DELAY_KEYS.map((k) => [k, String(l[k])])) };
  },
  create(spec, bases): BdevDesc {
    const base = bases[0]!;
    const shared = new SharedArrayBuffer(4 * 4);
    const us = new Int32Array(shared);
    DELAY_KEYS.forEach((k, i) => (us[i] = Number(spec[k])));
    return { info: windowInfo(spec.name!, 'delay', base, base.info.sizeBytes), params: {}, bases: [base], shared };
  },
  open(desc: BdevDesc, ctx: ChannelContext): Channel {
    const base = desc.bases![0]!;
    return new DelayChannel(ctx.openBase(base), base, ctx, desc);
  },
  describe(desc) {
    const us = new Int32Array(desc.shared!);
    return {
      productName: 'delay',
      driverSpecific: {
        delay: {
          name: desc.info.name,
          base_bdev_name: desc.bases![0]!.info.name,
          avg_read_latency: us[AVG_READ],
          p99_read_latency: us[P99_READ],
          avg_write_latency: us[AVG_WRITE],
          p99_write_latency: us[P99_WRITE],
        },
      },
    };
  },
  destroy(): void {},
};

/** Change one latency at run time (bdev_delay_update_latency); every reactor's channel sees it at its next I/O. */
export function updateLatency(desc: BdevDesc, key: DelayKey, us: number): void {
  const a = new Int32Array(desc.shared!);
  const i = DELAY_KEYS.indexOf(key);
  const next = Object.fromEntries(DELAY_KEYS.map((k, j) => [k, j === i ? us : a[j]!])) as Record<DelayKey, number>;
  checkLatencies(next);
  Atomics.store(a, i, us);
}
