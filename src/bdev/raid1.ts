// raid1 bdev: a mirror of 2..32 members (SPDK's bdev_raid_create -r raid1).
// Writes go to every member in service, reads to one online member in turn. A
// member that fails an I/O is marked failed and the mirror goes on from the
// others, with no error to the guest while one online member did the I/O; the
// last online member is never failed (its errors are the guest's). A failed
// member re-added (bdev_raid_add_base_bdev) is rebuilt in the background while
// I/O goes on: copied chunk by chunk from an online member, and written to by
// the guest meanwhile, so it is in step when the copy reaches the end.
//
// Everything the mirror's channels share (one per reactor that serves it)
// lives in desc.shared: member states, the rebuild's cursor and owner, and
// counters of writes in flight per chunk. The rebuild copies one chunk at a
// time under a lock that every channel honours: a write to the locked chunk
// waits, and the copy starts only once the writes already under way there are
// done. Writers count themselves in before they look at the lock, and the
// rebuild sets the lock before it looks at the count (both sequentially
// consistent atomics), so one of the two always sees the other: a write can
// never land on the new member under a copy that would overwrite it with older
// data. The rebuild runs on whichever reactor's channel takes it first, from
// that channel's poll; a mirror nobody serves rebuilds when it is next served.
import { hostBuffer, type HostBuffer } from './api.js';
import { IoFifo, DeferredCompletions } from './deferred.js';
import { ChildPool } from './layer.js';
import { checkKeys } from './spec.js';
import { type BdevDesc, BdevIo, type BdevModule, type Channel, type ChannelContext, IoOp } from './types.js';

export const MAX_MEMBERS = 32;
export const MEMBER = { online: 0, failed: 1, rebuilding: 2 } as const;
const STATE_NAMES = ['online', 'failed', 'rebuilding'] as const;
/** the rebuild's unit: one chunk is copied at a time, and locked while it is */
export const CHUNK_BYTES = 1 << 20;

// Int32 slots of desc.shared
/**
 * The members online, one bit each: what counts for reads and for a write's
 * success. A member leaves it (and its state becomes failed) in one CAS that
 * refuses to empty it, so two reactors failing two members at once cannot
 * take the last copy out of service.
 */
const ONLINE_MASK = MAX_MEMBERS;
const OWNER = MAX_MEMBERS + 1;
const NEXT_ID = MAX_MEMBERS + 2;
/** the chunk being copied, -1 none */
const LOCK = MAX_MEMBERS + 3;
/** the member being rebuilt, -1 none */
const TARGET = MAX_MEMBERS + 4;
/** the next chunk to copy */
const CURSOR = MAX_MEMBERS + 5;
/** bumped when a rebuild starts or is called off: an owner working for an older one stops */
const GENERATION = MAX_MEMBERS + 6;
const COUNTERS = 64;
/** writes in flight, counted per chunk modulo this (a shared counter only delays the copy, never misleads it) */
const HASH = 4096;
const SHARED_INTS = COUNTERS + HASH;

const EIO = -5;
const EINVAL = -22;
/** write(): it waits for the rebuild's lock */
const DEFERRED = 1;
/** write(): its outcome is known already (a flush no member takes) and completes from poll */
const EARLY = 2;

/** A parent I/O on its way through the members. */
class MirrorOp {
  parent: BdevIo = undefined as unknown as BdevIo;
  /** children not yet completed */
  pending = 0;
  status = 0;
  /** members a read has tried, by bit */
  tried = 0;
  /** members the write succeeded on, by bit: it is done if one of them is still online at the end */
  okMask = 0;
  firstChunk = 0;
  lastChunk = -1;
}

type Rebuild = { gen: number; phase: 'lock' | 'drain' | 'reading' | 'writing' | 'flushing'; chunk: number; source: number; lenBytes: number };

/** Buffers of rebuilds whose channel closed with a copy under way: the kernel may still write there, so they are never unmapped. */
const ORPHANED: HostBuffer[] = [];

class Raid1Channel implements Channel {
  readonly notifyFd = -1;
  readonly copiesLater: boolean;
  private readonly s: Int32Array;
  private readonly n: number;
  private readonly sizeBytes: number;
  private readonly names: string[];
  private readonly flushes: boolean[];
  private readonly id: number;
  private readonly children: ChildPool;
  /** the member each child went to, by child slot */
  private memberOf = new Uint8Array(64);
  private readonly freeOps: MirrorOp[] = [];
  private inFlight = 0;
  /** writes waiting for the rebuild's lock to move on */
  private readonly waiting = new IoFifo(16);
  /** parents whose outcome was known inside submit: completed from poll */
  private readonly early = new DeferredCompletions(16);
  private rr = 0;
  private rebuild: Rebuild | undefined;
  private buffer: HostBuffer | undefined;
  private readonly rebuildChild: BdevIo;
  private closed = false;
  private readonly childDone = (child: BdevIo): void => this.completed(child);

  constructor(
    private readonly members: Channel[],
    private readonly desc: BdevDesc,
    private readonly ctx: ChannelContext,
  ) {
    this.s = new Int32Array(desc.shared!);
    this.n = members.length;
    this.sizeBytes = desc.info.sizeBytes;
    this.names = desc.bases!.map((b) => b.info.name);
    this.flushes = desc.bases!.map((b) => b.info.caps.flush);
    this.copiesLater = members.some((m) => m.copiesLater === true);
    this.id = Atomics.add(this.s, NEXT_ID, 1) + 1;
    this.children = new ChildPool(this.childDone);
    this.rebuildChild = new BdevIo();
    this.rebuildChild.done = (c) => this.rebuildDone(c);
  }

  submit(io: BdevIo): number {
    if (io.op !== IoOp.FLUSH && (io.offsetBytes < 0 || io.offsetBytes + io.lenBytes > this.sizeBytes)) return EINVAL;
    const op = this.freeOps.pop() ?? new MirrorOp();
    op.parent = io;
    op.pending = 0;
    op.status = 0;
    op.tried = 0;
    op.okMask = 0;
    op.lastChunk = -1;
    const rc = io.op === IoOp.READ ? this.read(op) : this.write(op);
    if (rc === DEFERRED) {
      this.freeOps.push(op);
      this.waiting.push(io);
      this.inFlight++;
      return 0;
    }
    if (rc === EARLY) return 0;
    if (rc < 0) {
      this.freeOps.push(op);
      return rc;
    }
    this.inFlight++;
    return 0;
  }

  /** Send a read to the next online member it has not tried; -EIO when none is left. */
  private read(op: MirrorOp): number {
    for (let k = 0; k < this.n; k++) {
      const m = (this.rr + k) % this.n;
      if (op.tried & (1 << m) || !isOnline(this.s, m)) continue;
      op.tried |= 1 << m;
      const rc = this.send(op, m, op.parent);
      if (rc === 0) {
        this.rr = (m + 1) % this.n;
        return 0;
      }
      this.memberFailed(m, rc, 'a read');
    }
    return op.status || EIO;
  }

  private write(op: MirrorOp): number {
    const io = op.parent;
    if (io.op !== IoOp.FLUSH) {
      const first = Math.floor(io.offsetBytes / CHUNK_BYTES);
      const last = io.lenBytes > 0 ? Math.floor((io.offsetBytes + io.lenBytes - 1) / CHUNK_BYTES) : first;
      for (let c = first; c <= last; c++) Atomics.add(this.s, COUNTERS + (c % HASH), 1);
      const locked = Atomics.load(this.s, LOCK);
      if (locked >= first && locked <= last) {
        for (let c = first; c <= last; c++) Atomics.sub(this.s, COUNTERS + (c % HASH), 1);
        return DEFERRED;
      }
      op.firstChunk = first;
      op.lastChunk = last;
    }
    let rc = EIO;
    for (let m = 0; m < this.n; m++) {
      const state = Atomics.load(this.s, m);
      if (state === MEMBER.failed || (io.op === IoOp.FLUSH && !this.flushes[m])) continue;
      const r = this.send(op, m, io);
      if (r === 0) continue;
      rc = r;
      this.memberFailed(m, r, 'a write');
    }
    if (op.pending > 0) return 0;
    // A flush no member takes is done; anything else reached no member.
    if (io.op === IoOp.FLUSH && rc === EIO && !this.flushes.some((f, m) => f && Atomics.load(this.s, m) !== MEMBER.failed)) {
      io.status = 0;
      this.early.push(io);
      this.freeOps.push(op);
      return EARLY;
    }
    this.releaseChunks(op);
    return rc;
  }

  private send(op: MirrorOp, m: number, io: BdevIo): number {
    const child = this.children.take();
    if (child.slot >= this.memberOf.length) {
      const next = new Uint8Array(2 * this.memberOf.length);
      next.set(this.memberOf);
      this.memberOf = next;
    }
    child.op = io.op;
    child.offsetBytes = io.offsetBytes;
    child.lenBytes = io.lenBytes;
    child.unmap = io.unmap;
    child.niov = io.niov;
    const src = io.iov;
    const dst = child.iov;
    for (let i = 0, n = 2 * io.niov; i < n; i++) dst[i] = src[i]!;
    child.status = 0;
    child.ctx = op;
    this.memberOf[child.slot] = m;
    const rc = this.members[m]!.submit(child);
    if (rc < 0) {
      this.children.give(child);
      return rc;
    }
    op.pending++;
    return 0;
  }

  private completed(child: BdevIo): void {
    const op = child.ctx as MirrorOp;
    const m = this.memberOf[child.slot]!;
    const status = child.status;
    this.children.give(child);
    op.pending--;
    if (op.parent.op === IoOp.READ) {
      if (status === 0) return this.finish(op, 0);
      op.status = status;
      this.memberFailed(m, status, 'a read');
      const rc = this.read(op);
      if (rc < 0) this.finish(op, rc);
      return;
    }
    if (status === 0) {
      op.okMask |= 1 << m;
    } else {
      op.status = status;
      this.memberFailed(m, status, op.parent.op === IoOp.FLUSH ? 'a flush' : 'a write');
    }
    if (op.pending > 0) return;
    this.releaseChunks(op);
    // Done only if a member that holds it is online now: one that took the
    // write may have been failed by another reactor meanwhile.
    this.finish(op, (op.okMask & Atomics.load(this.s, ONLINE_MASK)) !== 0 ? 0 : op.status || EIO);
  }

  private releaseChunks(op: MirrorOp): void {
    for (let c = op.firstChunk; c <= op.lastChunk; c++) Atomics.sub(this.s, COUNTERS + (c % HASH), 1);
    op.lastChunk = -1;
  }

  private finish(op: MirrorOp, status: number): void {
    const parent = op.parent;
    op.parent = undefined as unknown as BdevIo;
    this.freeOps.push(op);
    this.inFlight--;
    parent.status = status;
    parent.done(parent);
  }

  /**
   * Take member m out of service after an error, unless it is the last online
   * member (then the error is the I/O's). The channel that makes the change
   * logs it, once for all reactors.
   */
  private memberFailed(m: number, status: number, what: string): void {
    const r = failMember(this.s, m);
    if (r === 'rebuilding') {
      this.ctx.log('warn', `raid1 ${this.desc.info.name}: member ${this.names[m]} failed ${what} (errno ${-status}) while it was rebuilt; the rebuild stops`, { member: this.names[m] });
    } else if (r === 'online') {
      this.ctx.log('warn', `raid1 ${this.desc.info.name}: member ${this.names[m]} failed ${what} (errno ${-status}); the mirror goes on from the others`, { member: this.names[m] });
    }
  }

  poll(): number {
    let work = 0;
    if (this.early.size() > 0) work += this.early.drain();
    // Writes waiting for the lock, or a copy waiting for writes, keep the
    // reactor polling: what they wait for may happen on another reactor, which
    // has no way to wake this one.
    if (this.waiting.size() > 0) work += this.retryWaiting() + (this.waiting.size() > 0 ? 1 : 0);
    if (this.rebuild !== undefined || Atomics.load(this.s, TARGET) >= 0) work += this.rebuildStep();
    return work;
  }

  /** Writes that waited for the lock, in their order, until one has to wait again. */
  private retryWaiting(): number {
    let ran = 0;
    for (let io = this.waiting.peek(); io; io = this.waiting.peek()) {
      const op = this.freeOps.pop() ?? new MirrorOp();
      op.parent = io;
      op.pending = 0;
        op.status = 0;
      op.okMask = 0;
      op.lastChunk = -1;
      const rc = this.write(op);
      if (rc === DEFERRED) {
        this.freeOps.push(op);
        break;
      }
      this.waiting.shift();
      ran++;
      if (rc < 0) {
        this.freeOps.push(op);
        this.inFlight--;
        io.status = rc;
        io.done(io);
      }
    }
    return ran;
  }

  /** One step of the rebuild, if this channel runs it (or can take it): returns 1 when it moved. */
  private rebuildStep(): number {
    const s = this.s;
    let rb = this.rebuild;
    if (rb === undefined) {
      if (Atomics.load(s, OWNER) !== 0 || Atomics.compareExchange(s, OWNER, 0, this.id) !== 0) return 0;
      const target = Atomics.load(s, TARGET);
      if (target < 0 || Atomics.load(s, target) !== MEMBER.rebuilding) {
        // A target that failed while nobody ran its rebuild: there is none left to run.
        if (target >= 0) Atomics.compareExchange(s, TARGET, target, -1);
        Atomics.store(s, OWNER, 0);
        return 0;
      }
      this.buffer ??= hostBuffer(CHUNK_BYTES);
      rb = this.rebuild = { gen: Atomics.load(s, GENERATION), phase: 'lock', chunk: 0, source: -1, lenBytes: 0 };
      this.ctx.log('info', `raid1 ${this.desc.info.name}: rebuilding ${this.names[target]} from chunk ${Atomics.load(s, CURSOR)}`, { member: this.names[target] });
    }
    if (rb.phase === 'reading' || rb.phase === 'writing' || rb.phase === 'flushing') return 0;
    const target = Atomics.load(s, TARGET);
    if (Atomics.load(s, GENERATION) !== rb.gen || target < 0 || Atomics.load(s, target) !== MEMBER.rebuilding) {
      // Called off (the target failed or was removed), or started again from 0 (taken up afresh next pass).
      if (target >= 0 && Atomics.load(s, target) !== MEMBER.rebuilding) Atomics.compareExchange(s, TARGET, target, -1);
      this.endRebuild();
      return 1;
    }
    if (rb.phase === 'lock') {
      const chunk = Atomics.load(s, CURSOR);
      if (chunk * CHUNK_BYTES >= this.sizeBytes) {
        // The copy reaches the member's media before the member counts.
        if (this.flushes[target]) this.copy(IoOp.FLUSH, target, rb);
        else this.rebuilt(target);
        return 1;
      }
      rb.chunk = chunk;
      rb.lenBytes = Math.min(CHUNK_BYTES, this.sizeBytes - chunk * CHUNK_BYTES);
      Atomics.store(s, LOCK, chunk);
      rb.phase = 'drain';
    }
    // drain: the writes under way in the chunk finish first.
    if (Atomics.load(s, COUNTERS + (rb.chunk % HASH)) !== 0) return 1;
    let source = -1;
    for (let k = 0; k < this.n && source < 0; k++) {
      const m = (this.rr + k) % this.n;
      if (isOnline(s, m)) source = m;
    }
    if (source < 0) {
      this.abandon(target, 'no online member is left to copy from');
      return 1;
    }
    rb.source = source;
    this.copy(IoOp.READ, source, rb);
    return 1;
  }

  private copy(op: typeof IoOp.READ | typeof IoOp.WRITE | typeof IoOp.FLUSH, m: number, rb: Rebuild): void {
    const c = this.rebuildChild;
    const flush = op === IoOp.FLUSH;
    c.op = op;
    c.offsetBytes = flush ? 0 : rb.chunk * CHUNK_BYTES;
    c.lenBytes = flush ? 0 : rb.lenBytes;
    c.unmap = false;
    c.niov = flush ? 0 : 1;
    c.iov[0] = this.buffer!.addr;
    c.iov[1] = rb.lenBytes;
    c.status = 0;
    c.slot = m;
    rb.phase = op === IoOp.READ ? 'reading' : flush ? 'flushing' : 'writing';
    const rc = this.members[m]!.submit(c);
    if (rc < 0) {
      c.status = rc;
      this.rebuildDone(c, rc);
    }
  }

  private rebuildDone(c: BdevIo, early?: number): void {
    if (this.closed) return;
    const rb = this.rebuild!;
    const m = c.slot;
    const status = early ?? c.status;
    if (rb.phase === 'reading') {
      if (status < 0) {
        this.memberFailed(m, status, 'a rebuild read');
        // The last online member cannot be failed: its unreadable chunk cannot be copied either.
        if (isOnline(this.s, m)) this.abandon(Atomics.load(this.s, TARGET), `${this.names[m]}, the last online member, failed to read chunk ${rb.chunk} (errno ${-status})`);
        else rb.phase = 'drain';
        return;
      }
      const target = Atomics.load(this.s, TARGET);
      if (target < 0 || Atomics.load(this.s, GENERATION) !== rb.gen) {
        rb.phase = 'drain';
        return;
      }
      this.copy(IoOp.WRITE, target, rb);
      return;
    }
    if (status < 0) {
      this.memberFailed(m, status, rb.phase === 'flushing' ? 'the rebuild\'s flush' : 'a rebuild write');
      rb.phase = 'drain';
      return;
    }
    if (rb.phase === 'flushing') {
      this.rebuilt(m);
      return;
    }
    // A rebuild called off and started again meanwhile has its own cursor: this copy must not move it.
    if (Atomics.load(this.s, GENERATION) === rb.gen) Atomics.compareExchange(this.s, CURSOR, rb.chunk, rb.chunk + 1);
    Atomics.store(this.s, LOCK, -1);
    rb.phase = 'lock';
  }

  /** The copy reached the end: the member is online, unless it failed meanwhile. */
  private rebuilt(target: number): void {
    const s = this.s;
    if (Atomics.load(s, GENERATION) === this.rebuild!.gen && Atomics.compareExchange(s, target, MEMBER.rebuilding, MEMBER.online) === MEMBER.rebuilding) {
      Atomics.or(s, ONLINE_MASK, 1 << target);
      Atomics.compareExchange(s, TARGET, target, -1);
      this.ctx.log('info', `raid1 ${this.desc.info.name}: member ${this.names[target]} rebuilt; it is online`, { member: this.names[target] });
    }
    this.endRebuild();
  }

  /** Give the rebuild up: its target stays failed, to be added again. */
  private abandon(target: number, why: string): void {
    if (target >= 0 && Atomics.compareExchange(this.s, target, MEMBER.rebuilding, MEMBER.failed) === MEMBER.rebuilding) {
      Atomics.add(this.s, GENERATION, 1);
      Atomics.compareExchange(this.s, TARGET, target, -1);
      this.ctx.log('error', `raid1 ${this.desc.info.name}: the rebuild of ${this.names[target]} stopped: ${why}; it is failed`, { member: this.names[target] });
    }
    this.endRebuild();
  }

  private endRebuild(): void {
    this.rebuild = undefined;
    Atomics.store(this.s, LOCK, -1);
    Atomics.store(this.s, OWNER, 0);
  }

  /** A rebuild was asked for: the request that calls this woke the reactor, whose next pass takes it up in poll(). */
  settingsChanged(): void {}

  inflight(): number {
    const p = this.rebuild?.phase;
    return this.inFlight + this.early.size() + (p === 'reading' || p === 'writing' || p === 'flushing' ? 1 : 0);
  }

  kernelInflight(): number {
    return 0;
  }

  clearNotify(): void {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const rb = this.rebuild;
    if (rb) {
      // Not finished here: a copy still on its way could land after newer
      // writes that another reactor's rebuild let through, so the member goes
      // back to failed, to be added again. Between copies, the cursor stays and
      // the next channel to serve the mirror takes the rebuild up there.
      const busy = rb.phase === 'reading' || rb.phase === 'writing' || rb.phase === 'flushing';
      if (busy) this.abandon(Atomics.load(this.s, TARGET), 'the reactor that ran it stopped serving the mirror during a copy');
      this.endRebuild();
      if (busy && this.buffer) ORPHANED.push(this.buffer);
      else this.buffer?.free();
      this.buffer = undefined;
    } else this.buffer?.free();
    for (const b of this.desc.bases!) this.ctx.closeBase(b);
  }
}

function isOnline(s: Int32Array, m: number): boolean {
  return (Atomics.load(s, ONLINE_MASK) & (1 << m)) !== 0;
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/**
 * Take member m out of service: 'online' or 'rebuilding' when this call did
 * it (from that state), 'last' when it is the last online member (refused),
 * 'no' when it was failed already.
 */
function failMember(s: Int32Array, m: number): 'online' | 'rebuilding' | 'last' | 'no' {
  const bit = 1 << m;
  for (;;) {
    const state = Atomics.load(s, m);
    if (state === MEMBER.failed) return 'no';
    if (state === MEMBER.rebuilding) {
      if (Atomics.compareExchange(s, m, MEMBER.rebuilding, MEMBER.failed) !== MEMBER.rebuilding) continue;
      Atomics.add(s, GENERATION, 1);
      return 'rebuilding';
    }
    const mask = Atomics.load(s, ONLINE_MASK);
    // Online but not (yet, or any more) in the mask: another thread is between its two steps; look again.
    if ((mask & bit) === 0) continue;
    if (popcount(mask) <= 1) return 'last';
    if (Atomics.compareExchange(s, ONLINE_MASK, mask, mask & ~bit) !== mask) continue;
    Atomics.store(s, m, MEMBER.failed);
    return 'online';
  }
}

function parseMembers(v: string | undefined): string[] {
  const names = (v ?? '').split('+').filter((x) => x !== '');
  if (names.length < 2 || names.length > MAX_MEMBERS) {
    throw new Error(`raid1: members=${v ?? ''} must name 2..${MAX_MEMBERS} bdevs joined by '+', e.g. members=f0+f1`);
  }
  const dup = names.find((x, i) => names.indexOf(x) !== i);
  if (dup !== undefined) throw new Error(`raid1: member ${dup} is named twice in members=${v}`);
  return names;
}

const KEYS = {
  name: 'bdev name (required)',
  members: `the mirrored bdevs, 2..${MAX_MEMBERS} joined by '+' (required); claimed for writing while the mirror exists; its size is the smallest's`,
};

export const raid1Bdev: BdevModule = {
  type: 'raid1',
  keys: KEYS,
  baseNames: (spec) => parseMembers(spec.members),
  normalize(spec) {
    checkKeys('raid1', spec, KEYS, ['name', 'members']);
    const members = parseMembers(spec.members);
    if (members.includes(spec.name!)) throw new Error(`raid1: name=${spec.name} is one of its own members; give the mirror a name of its own`);
    return { name: spec.name!, members: members.join('+') };
  },
  create(spec, bases): BdevDesc {
    const bs = bases[0]!.info.blockSize;
    for (const b of bases) {
      if (b.info.blockSize !== bs) throw new Error(`raid1: members have different block sizes (${bases[0]!.info.name}: ${bs}, ${b.info.name}: ${b.info.blockSize}); mirror bdevs of one block size`);
      if (b.info.readonly) throw new Error(`raid1: member ${b.info.name} is read-only; a mirror writes to every member`);
    }
    const sizeBytes = Math.min(...bases.map((b) => b.info.sizeBytes));
    const shared = new SharedArrayBuffer(SHARED_INTS * 4);
    const s = new Int32Array(shared);
    Atomics.store(s, ONLINE_MASK, bases.length === 32 ? -1 : (1 << bases.length) - 1);
    Atomics.store(s, LOCK, -1);
    Atomics.store(s, TARGET, -1);
    return {
      info: {
        name: spec.name!,
        type: 'raid1',
        blockSize: bs,
        sizeBytes,
        readonly: false,
        caps: { flush: bases.some((b) => b.info.caps.flush), discard: bases.every((b) => b.info.caps.discard), writeZeroes: bases.every((b) => b.info.caps.writeZeroes) },
        maxDiscardBytes: Math.min(...bases.map((b) => b.info.maxDiscardBytes)),
        ...(bases.some((b) => b.info.singleReactor) ? { singleReactor: true } : {}),
        ...(bases.every((b) => b.info.volatile) ? { volatile: true } : {}),
      },
      params: {},
      bases,
      shared,
    };
  },
  open(desc: BdevDesc, ctx: ChannelContext): Channel {
    return new Raid1Channel(desc.bases!.map((b) => ctx.openBase(b)), desc, ctx);
  },
  describe: (desc) => ({ productName: 'Raid Volume', driverSpecific: { raid: raidStatus(desc) } }),
  destroy(): void {},
};

export interface RaidStatus {
  raid_level: 'raid1';
  state: 'online' | 'offline';
  strip_size_kb: 0;
  superblock: false;
  num_base_bdevs: number;
  num_base_bdevs_discovered: number;
  num_base_bdevs_operational: number;
  base_bdevs_list: { name: string; state: (typeof STATE_NAMES)[number]; is_configured: boolean; data_offset: 0; data_size: number }[];
  process?: { type: 'rebuild'; target: string; target_slot: number; progress: { blocks: number; percent: number } };
}

/** The mirror as SPDK's bdev_raid_get_bdevs shows one, with each member's state. */
export function raidStatus(desc: BdevDesc): RaidStatus {
  const s = new Int32Array(desc.shared!);
  const bases = desc.bases!;
  const mask = Atomics.load(s, ONLINE_MASK);
  // The mask says who is online; the state tells failed from rebuilding for the others.
  const states = bases.map((_, m) => (mask & (1 << m) ? MEMBER.online : Atomics.load(s, m) === MEMBER.rebuilding ? MEMBER.rebuilding : MEMBER.failed));
  const online = states.filter((x) => x === MEMBER.online).length;
  const blocks = desc.info.sizeBytes / desc.info.blockSize;
  const out: RaidStatus = {
    raid_level: 'raid1',
    state: online > 0 ? 'online' : 'offline',
    strip_size_kb: 0,
    superblock: false,
    num_base_bdevs: bases.length,
    num_base_bdevs_discovered: bases.length,
    num_base_bdevs_operational: states.filter((x) => x !== MEMBER.failed).length,
    base_bdevs_list: bases.map((b, m) => ({ name: b.info.name, state: STATE_NAMES[states[m]!]!, is_configured: states[m] !== MEMBER.failed, data_offset: 0, data_size: blocks })),
  };
  const target = Atomics.load(s, TARGET);
  if (target >= 0 && states[target] === MEMBER.rebuilding) {
    const done = Math.min(blocks, (Atomics.load(s, CURSOR) * CHUNK_BYTES) / desc.info.blockSize);
    out.process = { type: 'rebuild', target: bases[target]!.info.name, target_slot: target, progress: { blocks: done, percent: Math.floor((done / blocks) * 100) } };
  }
  return out;
}

function slotOf(desc: BdevDesc, member: string): number {
  const m = desc.bases!.findIndex((b) => b.info.name === member);
  if (m < 0) {
    throw new Error(`bdev '${member}' is not a member of raid1 ${desc.info.name} (its members: ${desc.bases!.map((b) => b.info.name).join(', ')}); a mirror's members are fixed when it is made`);
  }
  return m;
}

/** Put a failed member back (bdev_raid_add_base_bdev): it is rebuilt in the background, from the start. */
export function raidAddMember(desc: BdevDesc, member: string): void {
  const s = new Int32Array(desc.shared!);
  const m = slotOf(desc, member);
  const state = isOnline(s, m) ? MEMBER.online : Atomics.load(s, m);
  if (state !== MEMBER.failed) throw new Error(`member ${member} of raid1 ${desc.info.name} is ${STATE_NAMES[state]}; only a failed member is added back`);
  const target = Atomics.load(s, TARGET);
  if (target >= 0 && Atomics.load(s, target) === MEMBER.rebuilding) throw new Error(`raid1 ${desc.info.name} is rebuilding ${desc.bases![target]!.info.name}; add ${member} once that is done`);
  if (Atomics.load(s, OWNER) !== 0) throw new Error(`raid1 ${desc.info.name}: the rebuild called off a moment ago is still finishing its last copy; add ${member} again in a moment`);
  if (Atomics.load(s, ONLINE_MASK) === 0) throw new Error(`raid1 ${desc.info.name} has no online member to rebuild ${member} from`);
  Atomics.store(s, CURSOR, 0);
  Atomics.add(s, GENERATION, 1);
  if (Atomics.compareExchange(s, m, MEMBER.failed, MEMBER.rebuilding) !== MEMBER.failed) throw new Error(`member ${member} of raid1 ${desc.info.name} changed state meanwhile; look again`);
  // Last: a channel that sees the target sees the member rebuilding and the cursor at 0.
  Atomics.store(s, TARGET, m);
}

/** Take a member out of service by hand (bdev_raid_remove_base_bdev): it is failed, and keeps its slot for a later add. */
export function raidRemoveMember(desc: BdevDesc, member: string): void {
  const s = new Int32Array(desc.shared!);
  const r = failMember(s, slotOf(desc, member));
  if (r === 'no') throw new Error(`member ${member} of raid1 ${desc.info.name} is failed already`);
  if (r === 'last') throw new Error(`member ${member} is the last online member of raid1 ${desc.info.name}; the mirror would have no data left`);
}
