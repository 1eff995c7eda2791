// A reactor: one thread that polls its queues and bdev channels, spins while
// there is work and for a short window after, then arms notifications and sleeps
// in epoll on kick fds, channel eventfds and its wake fd (no lost wake-ups: the
// rings are re-checked after arming). Control requests arrive on a MessagePort
// and are read synchronously, so the loop never yields to the event loop.
import { bdevModule, bdevModuleSource } from '../bdev/registry.js';
import type { BdevDesc, Channel, ChannelContext } from '../bdev/types.js';
import type { NativeShim } from '../native/index.js';
import { loadNet, type NetShim } from '../native/net.js';
import { BlkQueue } from '../virtio/blk.js';
import { IoClock, perf } from '../virtio/blk-counters.js';
import { IotlbMapper } from './iotlb.js';
import { inflightSplitStride, SplitInflight } from '../virtio/inflight.js';
import { inflightPackedStride, PackedInflight } from '../virtio/inflight-packed.js';
import { GuestMemory } from '../virtio/memory.js';
import { PackedRing } from '../virtio/packed-ring.js';
import { SplitRing } from '../virtio/split-ring.js';
import type { Virtqueue } from '../virtio/virtqueue.js';
import type { QueueSpec, QueueStopped, ReactorInit, ReactorReply, ReactorRequest } from './messages.js';
import { R_BUSY_NS, R_IDLE_NS, R_ITERATIONS, R_SLEEP_SINCE_MS, R_SLEEPS, R_SLOTS, monotonicMs } from './reactor-counters.js';

interface ChannelRef {
  key: string;
  bdev: BdevDesc;
  channel: Channel;
  users: number;
  token: number;
}

interface MemRef {
  mem: GuestMemory;
  users: number;
  iotlb: IotlbMapper | undefined;
}

interface QueueState {
  spec: QueueSpec;
  blk: BlkQueue;
  memKey: string;
  chanKey: string;
  callFd: number;
  /** VDUSE: interrupt by ioctl; the u32 argument buffer is made once */
  irqArg: Uint8Array | undefined;
  token: number;
  /** set while draining in-flight I/O before a stop reply */
  stopSeq: number;
  broken: boolean;
  /** its channel copies read data into guest memory after submit (Channel.copiesLater) */
  copiesLater: boolean;
}

/** Receives requests; in the worker, a wrapper over receiveMessageOnPort. */
export interface RequestSource {
  take(): { seq: number; req: ReactorRequest } | undefined;
  reply(r: ReactorReply): void;
}

const TOKEN_WAKE = 0;
const TOKEN_IRQ_TIMER = 1;

export class Reactor {
  private readonly queues = new Map<string, QueueState>();
  private active: QueueState[] = [];
  private readonly channels = new Map<string, ChannelRef>();
  /** the channels' values as an array: the loop walks it by index (a Map iterator per pass is garbage) */
  private channelList: ChannelRef[] = [];
  private readonly memories = new Map<string, MemRef>();
  private readonly epfd: number;
  /** wakes a sleeping reactor when a held-back interrupt falls due (armIrqTimer) */
  private readonly irqTimerFd: number;
  private readonly net: NetShim = loadNet();
  private readonly events = new Uint32Array(128);
  private readonly pending: Int32Array;
  private readonly tokens = new Map<number, () => void>();
  private nextToken = 2;
  private running = true;
  private idleSince = 0;
  private stats = { iterations: 0, sleeps: 0 };
  /** requests completed by queues that have since been removed */
  private retired = { completed: 0, failed: 0 };
  /** stamps requests for the queues' counters; see IoClock */
  private readonly clock = new IoClock();
  /** busy/idle counters (reactor-counters.ts), written by this thread only */
  private readonly rc: Float64Array;
  /** performance.now() up to which busy/idle time is accounted */
  private markMs = performance.now();
  /** a reading the next pass may start from (end of a busy pass, a wake-up); -1: none */
  private seedMs = -1;
  /** monotonicMs() - performance.now(): this thread's clock on the process-wide one */
  private readonly monoOffsetMs: number;
  /** for each open() under way (layers open their bases inside theirs): the bases it opened, given back if it throws */
  private readonly opening: string[][] = [];
  private readonly channelContext: ChannelContext = {
    log: (level, msg, data) => this.source.reply({ event: 'log', level, msg, ...(data ? { data } : {}) }),
    openBase: (base) => {
      const c = this.acquireChannel(base);
      this.opening.at(-1)?.push(base.info.name);
      return c.channel;
    },
    closeBase: (base) => this.releaseChannel(base.info.name),
  };

  constructor(
    private readonly native: NativeShim,
    private readonly init: ReactorInit,
    private readonly source: RequestSource,
  ) {
    this.epfd = native.epollCreate();
    this.pending = new Int32Array(init.pending);
    this.rc = new Float64Array(init.counters ?? new ArrayBuffer(R_SLOTS * 8), 0, R_SLOTS);
    this.monoOffsetMs = monotonicMs() - performance.now();
    native.epollCtl(this.epfd, native.EPOLL_CTL_ADD, init.wakeFd, native.EPOLLIN, TOKEN_WAKE);
    const net = this.net;
    const timer = (this.irqTimerFd = net.timerfdCreate());
    this.tokens.set(TOKEN_IRQ_TIMER, () => net.timerfdRead(timer));
    native.epollCtl(this.epfd, native.EPOLL_CTL_ADD, timer, native.EPOLLIN, TOKEN_IRQ_TIMER);
  }

  /** The reactor thread's whole life. */
  run(): void {
    // The clock is read every IDLE_CHECK idle passes rather than every pass: an
    // idle pass is cheaper than performance.now(). It only trims idle spinning
    // (an A/B against IDLE_CHECK = 1 showed no throughput change either way).
    const IDLE_CHECK = 32;
    let idlePasses = 0;
    while (this.running) {
      const work = this.iterate();
      if (work > 0) {
        this.idleSince = 0;
        idlePasses = 0;
        continue;
      }
      if (++idlePasses % IDLE_CHECK !== 0) continue;
      // Waiting only on the kernel (io_uring I/O in flight, rings quiet): sleep
      // now. Spinning would take the CPU the kernel needs to complete that I/O
      // (file randread QD32 A/B on 2 cores: ~101k IOPS sleeping vs ~86k
      // spinning); the io_uring eventfd wakes us when it is done.
      if (this.awaitingKernel()) {
        this.sleep(true);
        this.idleSince = 0;
        idlePasses = 0;
        continue;
      }
      const now = perf.now();
      if (this.idleSince === 0) this.idleSince = now;
      if ((now - this.idleSince) * 1000 < this.init.idleSpinUs) continue;
      this.sleep(false);
      this.idleSince = 0;
      idlePasses = 0;
    }
    this.close();
  }

  /** Does the kernel owe a channel I/O (and so will wake us through its notify fd)? */
  private awaitingKernel(): boolean {
    const cs = this.channelList;
    let owed = false;
    for (let i = 0; i < cs.length; i++) {
      try {
        if (cs[i]!.channel.kernelInflight() > 0) owed = true;
      } catch (e) {
        this.channelFailed(cs[i]!, 'kernelInflight', e);
      }
    }
    return owed;
  }

  /** One pass over control, queues and channels; returns the amount of work done. */
  iterate(): number {
    this.stats.iterations++;
    this.clock.beginPass(this.seedMs);
    this.seedMs = -1;
    let work = 0;
    if (Atomics.load(this.pending, 0) !== 0) work += this.handleRequests();
    const qs = this.active;
    for (let i = 0; i < qs.length; i++) {
      const q = qs[i]!;
      if (q.broken) continue;
      if (q.stopSeq >= 0) {
        // A stopping queue takes nothing new, but what QoS held back must still go.
        work += q.blk.releaseThrottled();
        continue;
      }
      try {
        work += q.blk.poll();
      } catch (e) {
        this.markBroken(q, `queue poll threw${moduleNote(q.spec.bdev)}: ${(e as Error).message}`);
      }
    }
    const cs = this.channelList;
    for (let i = 0; i < cs.length; i++) {
      const c = cs[i]!;
      try {
        work += c.channel.poll();
      } catch (e) {
        for (const q of qs) if (builtOn(q.spec.bdev, c.key)) this.markBroken(q, `bdev channel threw${moduleNote(q.spec.bdev)}: ${(e as Error).message}`);
      }
    }
    for (let i = 0; i < qs.length; i++) {
      const q = qs[i]!;
      if (q.blk.flush()) this.interrupt(q);
      // A broken queue can no longer complete what is in flight; stop it as it is,
      // unless data may still be copied into its memory (bounded by the store's timeouts).
      if (q.stopSeq >= 0 && (q.blk.inflight() === 0 || (q.broken && !q.copiesLater))) this.finishStop(q);
    }
    if (work > 0) this.accountBusy();
    return work;
  }

  /**
   * A pass did work: it was busy from its first clock reading (or its seed;
   * if it read none, e.g. control requests only, not at all) to now, idle
   * before that. The one reading taken here ends the pass, times every request
   * completed in it (after publishing and interrupting: when the driver was
   * told) and seeds the next pass, whose pops then come within a pass of it.
   */
  private accountBusy(): void {
    const end = perf.now();
    const start = this.clock.passStart >= 0 ? this.clock.passStart : end;
    const rc = this.rc;
    rc[R_IDLE_NS] += (start - this.markMs) * 1e6;
    rc[R_BUSY_NS] += (end - start) * 1e6;
    rc[R_ITERATIONS] = this.stats.iterations;
    this.markMs = end;
    this.seedMs = end;
    const qs = this.active;
    for (let i = 0; i < qs.length; i++) qs[i]!.blk.account(end);
  }

  private interrupt(q: QueueState): void {
    if (q.irqArg !== undefined) {
      const irq = q.spec.irq!;
      this.native.ioctl(irq.fd, irq.request, q.irqArg);
    } else if (q.callFd >= 0) {
      this.native.eventfdWrite(q.callFd, 1);
    }
  }

  private markBroken(q: QueueState, why: string): void {
    if (q.broken) return;
    q.broken = true;
    this.source.reply({ event: 'broken', id: q.spec.id, why });
  }

  /**
   * Arm kicks and sleep in epoll until a kick, a channel, a control request
   * or a timer wakes us. `kernelOwes`: only the kernel's I/O is pending, so
   * completions are still to come.
   */
  private sleep(kernelOwes: boolean): void {
    const n = this.native;
    let mustPoll = false;
    const qs = this.active;
    // What coalescing held back: on a queue whose own requests the kernel still works on, more
    // completions may join it, so it waits until it falls due (a timer wakes us then);
    // otherwise nothing will, and asleep we would never send it, so it goes now.
    let irqDueMs = -1;
    for (let i = 0; i < qs.length; i++) {
      const q = qs[i]!;
      const due = q.blk.owedInterruptDueMs();
      if (due < 0) continue;
      if (kernelOwes && q.blk.inflight() > 0 && !q.broken && q.stopSeq < 0) {
        if (irqDueMs < 0 || due < irqDueMs) irqDueMs = due;
      } else if (q.blk.takeOwedInterrupt()) {
        this.interrupt(q);
      }
    }
    for (let i = 0; i < qs.length; i++) {
      const q = qs[i]!;
      if (q.stopSeq >= 0 || q.broken) continue;
      if (q.spec.kickFd < 0) mustPoll = true; // no kick fd: this ring can only be polled
      // Kick fds are not drained here: the front-end may have made them blocking.
      // A stale kick only costs one extra pass through epoll, which reads it.
      q.blk.ring.setKicks(true);
    }
    // Re-check after arming: a buffer made available before the driver saw
    // our request for kicks would otherwise wait for the next, unrelated kick.
    for (let i = 0; i < qs.length; i++) {
      const q = qs[i]!;
      if (q.stopSeq >= 0 || (!q.broken && q.blk.ring.availPending())) mustPoll = true;
    }
    if (Atomics.load(this.pending, 0) !== 0) mustPoll = true;
    if (!mustPoll) {
      // Polling on instead, flush() sends it when due.
      if (irqDueMs >= 0) this.armIrqTimer(irqDueMs);
      this.stats.sleeps++;
      // Idle is accounted up to markMs; while asleep the reader adds the time
      // since then, so going to sleep costs no clock reading.
      const rc = this.rc;
      rc[R_SLEEPS] = this.stats.sleeps;
      rc[R_ITERATIONS] = this.stats.iterations;
      rc[R_SLEEP_SINCE_MS] = this.markMs + this.monoOffsetMs;
      const got = n.epollWait(this.epfd, this.events, this.throttledWakeMs());
      const t1 = perf.now();
      // Clear sleep-since before adding the sleep: a reader takes idle first (ReactorCounterReader).
      rc[R_SLEEP_SINCE_MS] = 0;
      rc[R_IDLE_NS] += (t1 - this.markMs) * 1e6;
      this.markMs = t1;
      this.seedMs = t1; // what woke us is popped in the next pass
      for (let i = 0; i < got; i++) {
        const token = this.events[2 * i + 1]!;
        if (token === TOKEN_WAKE) n.eventfdRead(this.init.wakeFd);
        else this.tokens.get(token)?.();
      }
    }
    for (let i = 0; i < qs.length; i++) qs[i]!.blk.ring.setKicks(false);
  }

  /** Wake at `dueMs` (an IoClock reading) for an interrupt coalescing holds back. */
  private armIrqTimer(dueMs: number): void {
    // A timer left armed from an earlier sleep only wakes us once for nothing.
    this.net.timerfdSet(this.irqTimerFd, Math.max(0.001, dueMs - perf.now()));
  }

  /** How long the reactor may sleep: until QoS lets a held request go (at least 1 ms), or -1 (until woken). */
  private throttledWakeMs(): number {
    let ms = -1;
    const qs = this.active;
    for (let i = 0; i < qs.length; i++) {
      const w = qs[i]!.blk.throttledWaitMs();
      if (w >= 0 && (ms < 0 || w < ms)) ms = w;
    }
    return ms < 0 ? -1 : Math.max(1, Math.ceil(ms));
  }

  private handleRequests(): number {
    Atomics.store(this.pending, 0, 0);
    let n = 0;
    for (let m = this.source.take(); m !== undefined; m = this.source.take()) {
      n++;
      try {
        this.handle(m.seq, m.req);
      } catch (e) {
        this.source.reply({ seq: m.seq, ok: false, error: (e as Error).message });
      }
    }
    return n;
  }

  private handle(seq: number, req: ReactorRequest): void {
    switch (req.op) {
      case 'addQueue':
        this.addQueue(req.queue);
        this.source.reply({ seq, ok: true });
        return;
      case 'setCall': {
        const q = this.queues.get(req.id);
        if (!q) throw new Error(`no queue ${req.id}`);
        q.callFd = req.callFd;
        this.source.reply({ seq, ok: true });
        return;
      }
      case 'stopQueue': {
        const q = this.queues.get(req.id);
        if (!q) throw new Error(`no queue ${req.id}`);
        // Stop taking new requests; reply once in-flight ones have completed.
        q.stopSeq = seq;
        // What a channel holds back with no end (an error bdev's pending I/O) must end now, or the stop never would.
        for (const c of this.channelList) {
          if (!builtOn(q.spec.bdev, c.key) || !c.channel.stopping) continue;
          try {
            c.channel.stopping();
          } catch (e) {
            this.channelFailed(c, 'stopping', e);
          }
        }
        return;
      }
      case 'queueState': {
        const q = this.queues.get(req.id);
        if (!q) throw new Error(`no queue ${req.id}`);
        const result: QueueStopped = { lastAvail: q.blk.ring.lastAvail, usedIdx: q.blk.ring.usedIdx };
        this.source.reply({ seq, ok: true, result });
        return;
      }
      case 'setSize': {
        for (const q of this.queues.values()) if (q.spec.bdev.info.name === req.bdev) q.blk.setSize(req.sizeBytes);
        this.source.reply({ seq, ok: true });
        return;
      }
      case 'settingsChanged': {
        this.channels.get(req.bdev)?.channel.settingsChanged?.();
        this.source.reply({ seq, ok: true });
        return;
      }
      case 'stats': {
        let completed = this.retired.completed;
        let failed = this.retired.failed;
        for (const q of this.queues.values()) {
          completed += q.blk.completed;
          failed += q.blk.failed;
        }
        this.source.reply({ seq, ok: true, result: { queues: this.queues.size, completed, failed, ...this.stats } });
        return;
      }
      case 'shutdown':
        for (const q of [...this.queues.values()]) this.removeQueue(q);
        this.running = false;
        this.source.reply({ seq, ok: true });
        return;
    }
  }

  private addQueue(s: QueueSpec): void {
    if (this.queues.has(s.id)) throw new Error(`queue ${s.id} is already running`);
    const memKey = `${s.device}#${s.memory.generation}`;
    let m = this.memories.get(memKey);
    if (!m) {
      const mem = new GuestMemory(s.memory.regions, (addr, len) => this.native.viewAddress(addr, len));
      m = { mem, users: 0, iotlb: s.memory.iotlb ? new IotlbMapper(this.native, s.memory.iotlb, mem, (msg) => this.source.reply({ event: 'log', level: 'info', msg })) : undefined };
      this.memories.set(memKey, m);
    }
    const mem = m.mem;
    const where = (addr: number, len: number, what: string) => {
      const r = mem.findHost(addr, len);
      if (!r) throw new Error(`${what} of queue ${s.id} is outside guest memory`);
      return r;
    };
    const ring: Virtqueue = s.packed
      ? new PackedRing(
          mem,
          {
            size: s.size,
            desc: where(s.descAddr, 16 * s.size, 'descriptor ring'),
            driver: where(s.availAddr, 4, 'driver area'),
            device: where(s.usedAddr, 4, 'device area'),
          },
          s.eventIdx,
          s.indirect,
          s.lastAvail,
          s.usedIdx,
          s.inflight && {
            inflight: new PackedInflight(this.native.viewAddress(s.inflight.addr, inflightPackedStride(s.inflight.descNum)), 0, s.inflight.descNum, s.inflight.nextCounter, s.inflight.resubmit),
            resubmit: s.inflight.resubmit,
          },
        )
      : new SplitRing(
          mem,
          {
            size: s.size,
            desc: where(s.descAddr, 16 * s.size, 'descriptor table'),
            avail: where(s.availAddr, 6 + 2 * s.size, 'available ring'),
            used: where(s.usedAddr, 6 + 8 * s.size, 'used ring'),
          },
          s.eventIdx,
          s.indirect,
          s.lastAvail,
          s.usedIdx,
          s.inflight && {
            inflight: new SplitInflight(this.native.viewAddress(s.inflight.addr, inflightSplitStride(s.inflight.descNum)), 0, s.inflight.descNum, s.inflight.nextCounter),
            resubmit: s.inflight.resubmit,
          },
        );
    const chanKey = s.bdev.info.name;
    const c = this.acquireChannel(s.bdev);
    const q: QueueState = {
      spec: s,
      memKey,
      chanKey,
      callFd: s.callFd,
      irqArg: s.irq ? new Uint8Array(new Uint32Array([s.irq.arg]).buffer) : undefined,
      token: 0,
      stopSeq: -1,
      broken: false,
      copiesLater: c.channel.copiesLater === true,
      blk: undefined as unknown as BlkQueue,
    };
    try {
      q.blk = new BlkQueue(ring, mem, c.channel, s.blk, { broken: (why) => this.markBroken(q, why) }, {
        counters: s.counters,
        clock: this.clock,
        ...(s.bdev.qos ? { qos: s.bdev.qos } : {}),
        ...(s.coalescing ? { coalescing: s.coalescing } : {}),
      });
    } catch (e) {
      this.releaseChannel(chanKey);
      throw e;
    }
    m.users++;
    if (s.kickFd >= 0) {
      q.token = this.nextToken++;
      const kick = s.kickFd;
      this.tokens.set(q.token, () => this.native.eventfdRead(kick));
      this.native.epollCtl(this.epfd, this.native.EPOLL_CTL_ADD, kick, this.native.EPOLLIN, q.token);
    }
    ring.setKicks(false);
    this.queues.set(s.id, q);
    this.active = [...this.queues.values()];
  }

  /**
   * This reactor's channel on a bdev, shared by every queue and layer on it
   * here: opened on first use (a layer's open opens its bases in turn), and
   * polled by the loop like any other.
   */
  private acquireChannel(bdev: BdevDesc): ChannelRef {
    const key = bdev.info.name;
    let c = this.channels.get(key);
    if (!c) {
      const opened: string[] = [];
      this.opening.push(opened);
      let channel: Channel;
      try {
        channel = bdevModule(bdev.info.type).open(bdev, this.channelContext);
      } catch (e) {
        for (const k of opened) this.releaseChannel(k);
        throw e;
      } finally {
        this.opening.pop();
      }
      const ref: ChannelRef = { key, bdev, channel, users: 0, token: 0 };
      c = ref;
      if (channel.notifyFd >= 0) {
        c.token = this.nextToken++;
        this.tokens.set(c.token, () => {
          try {
            channel.clearNotify();
          } catch (e) {
            this.channelFailed(ref, 'clearNotify', e);
          }
        });
        this.native.epollCtl(this.epfd, this.native.EPOLL_CTL_ADD, channel.notifyFd, this.native.EPOLLIN, c.token);
      }
      this.channels.set(key, c);
      this.channelList = [...this.channels.values()];
    }
    c.users++;
    return c;
  }

  private releaseChannel(key: string): void {
    const c = this.channels.get(key);
    if (!c || --c.users > 0) return;
    const n = this.native;
    if (c.token) {
      n.epollCtl(this.epfd, n.EPOLL_CTL_DEL, c.channel.notifyFd, 0, 0);
      this.tokens.delete(c.token);
    }
    this.channels.delete(key);
    this.channelList = [...this.channels.values()];
    // Last: a layer's close gives back its bases' channels in turn.
    try {
      c.channel.close();
    } catch (e) {
      this.source.reply({ event: 'log', level: 'error', msg: `closing the channel of bdev '${key}' threw${moduleNote(c.bdev)}: ${(e as Error)?.message ?? String(e)}` });
    }
  }

  /** A channel method threw: the queues built on that bdev break (the reactor and the others go on). */
  private channelFailed(c: ChannelRef, what: string, e: unknown): void {
    for (const q of this.active) if (builtOn(q.spec.bdev, c.key)) this.markBroken(q, `bdev channel ${what} threw${moduleNote(q.spec.bdev)}: ${(e as Error)?.message ?? String(e)}`);
  }

  private finishStop(q: QueueState): void {
    const seq = q.stopSeq;
    const result: QueueStopped = { lastAvail: q.blk.ring.lastAvail, usedIdx: q.blk.ring.usedIdx };
    this.removeQueue(q);
    this.source.reply({ seq, ok: true, result });
  }

  private removeQueue(q: QueueState): void {
    const n = this.native;
    // The last completions' interrupt, if coalescing held it back: a driver sleeping on it would wait for good.
    if (q.blk.takeOwedInterrupt()) this.interrupt(q);
    if (q.token) {
      n.epollCtl(this.epfd, n.EPOLL_CTL_DEL, q.spec.kickFd, 0, 0);
      this.tokens.delete(q.token);
    }
    this.queues.delete(q.spec.id);
    this.active = [...this.queues.values()];
    this.retired.completed += q.blk.completed;
    this.retired.failed += q.blk.failed;
    q.blk.detachCounters();
    this.releaseChannel(q.chanKey);
    const m = this.memories.get(q.memKey)!;
    if (--m.users === 0) {
      // Detach our views before the main thread unmaps: a stale view then reads as empty.
      for (const w of m.mem.windows) n.detach(w.buffer);
      m.iotlb?.close();
      this.memories.delete(q.memKey);
    }
  }

  private close(): void {
    this.native.close(this.irqTimerFd);
    this.native.close(this.epfd);
  }
}

/** Is `name` this bdev or one of the bdevs under it? */
function builtOn(bdev: BdevDesc, name: string): boolean {
  if (bdev.info.name === name) return true;
  for (const b of bdev.bases ?? []) if (builtOn(b, name)) return true;
  return false;
}

/** Which user modules the bdev is made of, for a message about what threw: " (bdev module ./x.js, type x)". */
function moduleNote(bdev: BdevDesc): string {
  const found: string[] = [];
  const walk = (d: BdevDesc) => {
    const src = bdevModuleSource(d.info.type);
    if (src && !found.some((f) => f.startsWith(`${src},`))) found.push(`${src}, type ${d.info.type}`);
    for (const b of d.bases ?? []) walk(b);
  };
  walk(bdev);
  return found.length ? ` (bdev module ${found.join('; ')})` : '';
}
