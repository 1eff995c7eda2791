// nbd channel: one reactor's connections to an NBD server, driven without a
// thread or node:net (a reactor never returns to the event loop). Sockets and
// a timerfd sit in a private epoll whose fd is the channel's notifyFd: nested
// epoll is pollable, so sockets come and go across reconnects while the
// reactor's registration stays the same.
//
// Requests: each BdevIo gets a record; the record is cut into sub-requests
// (slots) no larger than the server's max payload; a slot's cookie is
// (generation, slot). FLUSH is fanned out to every connected connection and
// completes when all replied: with several connections a flush must cover the
// writes replied on each of them (proto.md "Multi-conn"). A lost connection
// (EOF, error, protocol violation) requeues its slots; the connection comes
// back with exponential back-off; I/O waits up to reconnect-timeout after the
// last connection was lost, then fails with EIO, and new I/O fails at once
// until a connection is back (retries continue at the back-off cap). A
// connection counts as good (back-off and the outage clock reset) only once it
// delivered a valid reply, not when its handshake passed: a server that
// handshakes and then drops or ignores requests backs off like a dead one. And
// each slot fails with EIO once io-timeout + reconnect-timeout passed since it
// was first submitted, however often it was resent (a request that makes the
// server drop the connection, a backend that hangs behind a live server).
//
// A server that keeps the connection but stops replying (stopped, wedged) is
// caught by io-timeout: each slot carries the time it was handed to a
// connection, and when the timer reaches the oldest one's deadline the slots
// are scanned; a connection whose oldest request is overdue counts as lost.
import { performance } from 'node:perf_hooks';
import { loadNet, type NetShim } from '../../native/net.js';
import type { Mapping } from '../../native/index.js';
import { IoFifo } from '../deferred.js';
import { IOVEC_BYTES, putIovec } from '../iovec.js';
import { type BdevIo, type Channel, type ChannelContext, IoOp } from '../types.js';
import {
  NBD_CMD_DISC,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_REQUEST_SIZE,
  ReplyReader,
  type ReplySink,
  SLOT_FREE,
  type SlotTable,
  encodeRequest,
  makeSlotTable,
} from './codec.js';
import { NbdHandshake, type NbdExportInfo } from './handshake.js';

/** What a channel needs, from desc.params (structured-clone safe). */
export interface NbdChannelParams {
  /** bdev name and canonical URI, for log lines */
  bdevName: string;
  uri: string;
  /** 'tcp' (addr = IP literal resolved on the main thread) or 'unix' (addr = socket path) */
  transport: 'tcp' | 'unix';
  addr: string;
  port: number;
  exportName: string;
  connections: number;
  /** the server's size at create; a reconnect to a different size is refused */
  serverSizeBytes: number;
  /** transmission flags at create: capabilities a reconnect must still offer */
  serverFlags: number;
  readonly: boolean;
  /** largest READ/WRITE sent as one request (<= the server's max payload) */
  maxIoBytes: number;
  /** largest TRIM/WRITE_ZEROES sent as one request */
  maxRangeBytes: number;
  blockSize: number;
  reconnectTimeoutMs: number;
  connectTimeoutMs: number;
  /** a connection whose oldest request has waited this long is dropped; 0 = no deadline */
  ioTimeoutMs: number;
}

const SLOTS = 1024;
const RECS = 1024;
const HDR_STRIDE = 32;
const RX_BYTES = 256 * 1024;
const EAGAIN = -11;
const EIO = -5;
const ETIMEDOUT = -110;
const EROFS = -30;
const EOPNOTSUPP = -95;
const TIMER_TOKEN = 0xffff;
/** Passes (and wake-ups) between looks at the private epoll in steady state. */
const EPOLL_EVERY = 64;
/** Spinning passes between reads of the sockets. */
const SPIN_READ_EVERY = 16;
const BACKOFF_FIRST_MS = 50;
/** Retries continue at this interval for as long as the server stays away. */
export const BACKOFF_CAP_MS = 2000;
/** Bytes read from one connection per poll before other work gets a turn. */
const RX_BUDGET = 4 * RX_BYTES;
/** Handshake bytes read per poll. */
const HS_BUDGET = 16 * 1024;

const C_DOWN = 0;
const C_CONNECTING = 1;
const C_HANDSHAKE = 2;
const C_READY = 3;

class Conn {
  fd = -1;
  state = C_DOWN;
  hs: NbdHandshake | undefined;
  reader: ReplyReader | undefined;
  /** slots assigned here (queued for send or awaiting a reply) */
  outstanding = 0;
  readonly txq: Int32Array = new Int32Array(SLOTS);
  txHead = 0;
  txCount = 0;
  /** bytes of the head slot already sent */
  txSent = 0;
  wantOut = false;
  retryAt = 0;
  backoffMs = 0;
  deadline = 0;
  /** failures since the last good connection (logging is rate-limited on it) */
  failures = 0;
  /** scratch for the io-timeout scan: the earliest deadline of its requests */
  due = Infinity;
  /** a valid reply arrived on this connection (the server serves, not just handshakes) */
  proven = false;
  constructor(
    readonly id: number,
    readonly rxAddr: number,
    readonly rx: Uint8Array,
    readonly iovAddr: number,
    readonly iovDv: DataView,
  ) {}
}

class IoRec {
  io: BdevIo | undefined = undefined;
  /** next byte of the I/O to cut into a slot */
  next = 0;
  /** slots created and not yet completed */
  parts = 0;
  issued = false;
  status = 0;
}

/** FIFO of slot numbers (requests not yet assigned to a connection). */
class SlotFifo {
  private readonly q = new Int32Array(SLOTS);
  private head = 0;
  count = 0;
  push(s: number): void {
    this.q[(this.head + this.count++) % SLOTS] = s;
  }
  shift(): number {
    const s = this.q[this.head]!;
    this.head = (this.head + 1) % SLOTS;
    this.count--;
    return s;
  }
}


export class NbdChannel implements Channel, ReplySink {
  /** replies are copied into guest memory when they arrive; they are bounded by io-timeout + reconnect-timeout */
  readonly copiesLater = true;
  readonly notifyFd: number;
  private readonly n: NetShim;
  private readonly timerFd: number;
  private readonly arena: Mapping;
  private readonly arenaLen: number;
  private readonly hdrDv: DataView;
  private readonly conns: Conn[] = [];
  private readonly table: SlotTable = makeSlotTable(SLOTS);
  private readonly slotRec = new Int32Array(SLOTS);
  private readonly slotIoOff = new Float64Array(SLOTS);
  private readonly slotFlags = new Uint16Array(SLOTS);
  /** connection a FLUSH part must go to (-1: any) */
  private readonly slotTarget = new Int16Array(SLOTS).fill(-1);
  /** performance.now() when the slot was handed to its connection (io-timeout) */
  private readonly slotSentAt = new Float64Array(SLOTS);
  /** performance.now() when the slot was made: resends do not move it (the retry bound) */
  private readonly slotFirstAt = new Float64Array(SLOTS);
  /** ms from slotFirstAt after which a slot fails instead of being resent */
  private readonly retryBoundMs: number;
  /** when to look for overdue requests: no later than the oldest one's deadline; Infinity when none are out */
  private ioCheckAt = Infinity;
  private readonly freeSlots = new Int32Array(SLOTS);
  private nfreeSlots = SLOTS;
  private readonly recs: IoRec[] = [];
  private readonly freeRecs = new Int32Array(RECS);
  private nfreeRecs = RECS;
  /** records with bytes still to cut into slots, in order */
  private readonly toIssue = new Int32Array(RECS);
  private issueHead = 0;
  private issueCount = 0;
  private readonly unsent = new SlotFifo();
  /** I/O that found no free record */
  private readonly backlog = new IoFifo(256);
  /** completions decided outside a reply (fail-fast, bad requests), run by the next poll */
  private readonly doneQ = new IoFifo(64);
  private readonly evs = new Uint32Array(2 * 64);
  private inflightCount = 0;
  private ready = 0;
  private downSince: number;
  /** last time a proven connection was lost (the start of the current outage) */
  private lastGood: number;
  private failFast = false;
  private woken = true;
  private wakes = 0;
  private spins = 0;
  private armedAt = Infinity;
  private completed = 0;
  /** rx address of the connection being fed, for data() */
  private feedAddr = 0;
  private closed = false;

  constructor(
    private readonly p: NbdChannelParams,
    private readonly ctx: ChannelContext,
  ) {
    const n = (this.n = loadNet());
    const nconn = Math.max(1, Math.min(16, p.connections));
    const perConn = RX_BYTES + n.IOV_MAX * IOVEC_BYTES;
    this.arenaLen = SLOTS * HDR_STRIDE + nconn * perConn;
    this.arena = n.mmap(-1, 0, this.arenaLen, n.PROT_READ | n.PROT_WRITE, n.MAP_PRIVATE | n.MAP_ANONYMOUS);
    this.hdrDv = new DataView(this.arena.buffer, 0, SLOTS * HDR_STRIDE);
    this.notifyFd = n.epollCreate();
    this.timerFd = n.timerfdCreate();
    n.epollCtl(this.notifyFd, n.EPOLL_CTL_ADD, this.timerFd, n.EPOLLIN, TIMER_TOKEN);
    for (let i = 0; i < nconn; i++) {
      const base = SLOTS * HDR_STRIDE + i * perConn;
      this.conns.push(
        new Conn(
          i,
          this.arena.addr + base,
          new Uint8Array(this.arena.buffer, base, RX_BYTES),
          this.arena.addr + base + RX_BYTES,
          new DataView(this.arena.buffer, base + RX_BYTES, n.IOV_MAX * IOVEC_BYTES),
        ),
      );
    }
    for (let i = 0; i < SLOTS; i++) this.freeSlots[i] = SLOTS - 1 - i;
    for (let i = 0; i < RECS; i++) {
      this.recs.push(new IoRec());
      this.freeRecs[i] = RECS - 1 - i;
    }
    this.retryBoundMs = p.ioTimeoutMs + p.reconnectTimeoutMs;
    this.downSince = this.lastGood = performance.now();
    for (const c of this.conns) this.connect(c, this.downSince);
    this.updateTimer(this.downSince);
  }

  // ------------------------------------------------------------ Channel

  submit(io: BdevIo): number {
    this.inflightCount++;
    const isWrite = io.op === IoOp.WRITE || io.op === IoOp.DISCARD || io.op === IoOp.WRITE_ZEROES;
    if (io.op > IoOp.WRITE_ZEROES) return this.later(io, EOPNOTSUPP);
    if (isWrite && this.p.readonly) return this.later(io, EROFS);
    if (this.failFast) return this.later(io, EIO);
    const f = this.p.serverFlags;
    // No SEND_FLUSH: the server promises no cache to flush (QEMU's client treats it so too).
    if (io.op === IoOp.FLUSH && (f & NBD_FLAG_SEND_FLUSH) === 0) return this.later(io, 0);
    if (io.op === IoOp.DISCARD && (f & NBD_FLAG_SEND_TRIM) === 0) return this.later(io, EOPNOTSUPP);
    if (io.op === IoOp.WRITE_ZEROES && (f & NBD_FLAG_SEND_WRITE_ZEROES) === 0) return this.later(io, EOPNOTSUPP);
    if (io.op !== IoOp.FLUSH && io.lenBytes === 0) return this.later(io, 0);
    if (this.nfreeRecs === 0 || this.backlog.size() > 0) {
      this.backlog.push(io);
      return 0;
    }
    this.startRec(io);
    return 0;
  }

  poll(): number {
    this.completed = 0;
    let n = 0;
    for (let io = this.doneQ.shift(); io !== undefined; io = this.doneQ.shift()) {
      this.inflightCount--;
      io.done(io);
      n++;
    }
    const net = this.n;
    let fired = false;
    // Steady state reads the sockets straight, without an epoll_wait per
    // pass (syscalls are most of this channel's CPU): when the reactor woke
    // us, and every SPIN_READ_EVERY passes while it spins with replies owed.
    // Reading every pass bought no IOPS (nbd QD32 on 2 shared cores: same
    // IOPS, 48 vs 35 µs of vdx CPU per I/O) and takes the CPU the server
    // needs; the reactor sleeps soon and its epoll wakes us. The private
    // epoll (the timer, EPOLLOUT, connects) is asked when a woken read found
    // nothing, and every EPOLL_EVERY passes and wake-ups anyway, so the
    // timer cannot starve behind replies that keep coming.
    let look = this.ready < this.conns.length || this.anyWantOut();
    if (!look && this.woken) {
      this.woken = false;
      look = ++this.wakes % EPOLL_EVERY === 0 || !this.readAll();
    } else if (!look && this.anyOutstanding()) {
      const k = ++this.spins;
      if (k % EPOLL_EVERY === 0) look = true;
      else if (k % SPIN_READ_EVERY === 0) this.readAll();
    }
    if (look) {
      this.woken = false;
      const got = net.epollWait(this.notifyFd, this.evs, 0);
      for (let i = 0; i < got; i++) {
        const token = this.evs[2 * i + 1]!;
        if (token === TIMER_TOKEN) {
          net.timerfdRead(this.timerFd);
          this.armedAt = Infinity;
          fired = true;
        } else if (token < this.conns.length) {
          this.event(this.conns[token]!, this.evs[2 * i]!);
        }
      }
    }
    if (fired && this.ioCheckAt !== Infinity) {
      const now = performance.now();
      if (now >= this.ioCheckAt) this.checkReplyDeadlines(now);
    }
    if (this.ready < this.conns.length) this.timePass(performance.now());
    while (this.backlog.size() > 0 && this.nfreeRecs > 0) this.startRec(this.backlog.shift()!);
    this.dispatch();
    // Steady state with requests out: the timer is armed for ioCheckAt and nothing needs a syscall.
    if (this.ready < this.conns.length || this.armedAt !== this.ioCheckAt) this.updateTimer(performance.now());
    return n + this.completed;
  }

  inflight(): number {
    return this.inflightCount;
  }

  kernelInflight(): number {
    // Replies owed by the server, connects and handshakes under way, and the
    // back-off/deadline timer all make the private epoll readable. The reply
    // deadline alone does not count: left armed after the last reply (see
    // checkReplyDeadlines), it must not stop the reactor's idle spin.
    let k = this.ready < this.conns.length && this.armedAt !== Infinity ? 1 : 0;
    for (let i = 0; i < this.conns.length; i++) {
      const c = this.conns[i]!;
      k += c.outstanding + (c.state === C_CONNECTING || c.state === C_HANDSHAKE ? 1 : 0);
    }
    return k;
  }

  clearNotify(): void {
    // Level-triggered nested epoll: poll() drains the sockets and the timer.
    this.woken = true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const n = this.n;
    const disc = new Uint8Array(NBD_REQUEST_SIZE);
    encodeRequest(new DataView(disc.buffer), 0, 0, NBD_CMD_DISC, 0, 0, 0, 0);
    for (const c of this.conns) {
      // Soft disconnect (proto.md "Terminating the transmission phase"), best effort.
      if (c.state === C_READY && c.txCount === 0 && c.txSent === 0) n.sendBuf(c.fd, disc, 0, disc.length);
      this.closeFd(c);
    }
    n.close(this.timerFd);
    n.close(this.notifyFd);
    n.munmap(this.arena.buffer, this.arena.addr, this.arenaLen);
  }

  // ------------------------------------------------------------ ReplySink

  data(slot: number, reqOffset: number, bufOffset: number, len: number): void {
    this.scatter(slot, reqOffset, this.feedAddr + bufOffset, len);
  }

  hole(slot: number, reqOffset: number, len: number): void {
    this.scatter(slot, reqOffset, -1, len);
  }

  done(slot: number): void {
    const c = this.conns[this.table.conn[slot]!]!;
    if (!c.proven) this.proven(c);
    this.finishSlot(slot, this.table.err[slot]!);
  }

  // ------------------------------------------------------------ requests

  private later(io: BdevIo, status: number): number {
    io.status = status;
    this.doneQ.push(io);
    return 0;
  }

  /** Read replies on every connection that owes some; true if any had bytes (or closed). */
  private readAll(): boolean {
    let any = false;
    for (let i = 0; i < this.conns.length; i++) {
      const c = this.conns[i]!;
      if (c.state === C_READY && c.outstanding > 0 && this.readReplies(c)) any = true;
    }
    return any;
  }

  private anyWantOut(): boolean {
    for (let i = 0; i < this.conns.length; i++) if (this.conns[i]!.wantOut) return true;
    return false;
  }

  private anyOutstanding(): boolean {
    for (let i = 0; i < this.conns.length; i++) if (this.conns[i]!.outstanding > 0) return true;
    return false;
  }

  private startRec(io: BdevIo): void {
    const ri = this.freeRecs[--this.nfreeRecs]!;
    const r = this.recs[ri]!;
    r.io = io;
    r.next = 0;
    r.parts = 0;
    r.issued = false;
    r.status = 0;
    this.toIssue[(this.issueHead + this.issueCount++) % RECS] = ri;
  }

  /** Cut records into slots while slots last; assign unsent slots to connections; send. */
  private dispatch(): void {
    const now = this.issueCount > 0 || this.unsent.count > 0 ? performance.now() : 0;
    while (this.issueCount > 0 && this.nfreeSlots > 0) {
      const ri = this.toIssue[this.issueHead]!;
      if (!this.issue(ri, now)) break;
      this.issueHead = (this.issueHead + 1) % RECS;
      this.issueCount--;
    }
    if (this.ready === 0) return;
    if (this.unsent.count > 0) {
      for (let k = this.unsent.count; k > 0; k--) this.assign(this.unsent.shift(), now);
    }
    for (let i = 0; i < this.conns.length; i++) {
      const c = this.conns[i]!;
      if (c.state === C_READY && c.txCount > 0 && !c.wantOut) this.flushTx(c);
    }
  }

  /** Make slots for a record; true when it is fully cut. */
  private issue(ri: number, now: number): boolean {
    const r = this.recs[ri]!;
    const io = r.io!;
    if (r.issued) return true; // failed while waiting
    if (io.op === IoOp.FLUSH) {
      const want = this.ready > 1 ? this.ready : 1;
      if (this.nfreeSlots < want) return false;
      if (this.ready <= 1) this.newSlot(ri, NBD_CMD_FLUSH, 0, 0, 0, 0, -1, now);
      else for (const c of this.conns) if (c.state === C_READY) this.newSlot(ri, NBD_CMD_FLUSH, 0, 0, 0, 0, c.id, now);
      r.issued = true;
      return true;
    }
    let cmd: number = NBD_CMD_READ;
    let flags = 0;
    let max = this.p.maxIoBytes;
    switch (io.op) {
      case IoOp.WRITE:
        cmd = NBD_CMD_WRITE;
        break;
      case IoOp.DISCARD:
        cmd = NBD_CMD_TRIM;
        max = this.p.maxRangeBytes;
        break;
      case IoOp.WRITE_ZEROES:
        cmd = NBD_CMD_WRITE_ZEROES;
        flags = io.unmap ? 0 : NBD_CMD_FLAG_NO_HOLE;
        max = this.p.maxRangeBytes;
        break;
    }
    while (r.next < io.lenBytes && this.nfreeSlots > 0) {
      const len = Math.min(max, io.lenBytes - r.next);
      this.newSlot(ri, cmd, flags, io.offsetBytes + r.next, len, r.next, -1, now);
      r.next += len;
    }
    if (r.next < io.lenBytes) return false;
    r.issued = true;
    return true;
  }

  private newSlot(ri: number, cmd: number, flags: number, off: number, len: number, ioOff: number, target: number, now: number): void {
    const s = this.freeSlots[--this.nfreeSlots]!;
    const t = this.table;
    t.cmd[s] = cmd;
    t.offsetBytes[s] = off;
    t.lenBytes[s] = len;
    t.conn[s] = -1;
    this.slotRec[s] = ri;
    this.slotIoOff[s] = ioOff;
    this.slotFlags[s] = flags;
    this.slotTarget[s] = target;
    this.slotFirstAt[s] = now;
    this.recs[ri]!.parts++;
    this.unsent.push(s);
  }

  /** Give an unsent slot to a connected connection (its target, else the least busy). */
  private assign(s: number, now: number): void {
    let c: Conn | undefined;
    const target = this.slotTarget[s]!;
    if (target >= 0 && this.conns[target]!.state === C_READY) c = this.conns[target];
    else {
      for (let i = 0; i < this.conns.length; i++) {
        const x = this.conns[i]!;
        if (x.state === C_READY && (c === undefined || x.outstanding < c.outstanding)) c = x;
      }
    }
    if (c === undefined) {
      this.unsent.push(s);
      return;
    }
    const t = this.table;
    t.conn[s] = c.id;
    t.gen[s] = (t.gen[s]! + 1) >>> 0; // a fresh cookie per send: a stale reply cannot match
    t.covered[s] = 0;
    t.end[s] = 0;
    t.err[s] = 0;
    t.sent[s] = 0;
    encodeRequest(this.hdrDv, s * HDR_STRIDE, this.slotFlags[s]!, t.cmd[s]!, t.gen[s]!, s, t.offsetBytes[s]!, t.cmd[s] === NBD_CMD_FLUSH ? 0 : t.lenBytes[s]!);
    c.txq[(c.txHead + c.txCount++) % SLOTS] = s;
    c.outstanding++;
    this.slotSentAt[s] = now;
    if (this.p.ioTimeoutMs > 0) {
      const due = Math.min(now + this.p.ioTimeoutMs, this.slotFirstAt[s]! + this.retryBoundMs);
      if (due < this.ioCheckAt) this.ioCheckAt = due;
    }
  }

  private finishSlot(s: number, status: number): void {
    const t = this.table;
    const ci = t.conn[s]!;
    if (ci >= 0) this.conns[ci]!.outstanding--;
    t.cmd[s] = SLOT_FREE;
    t.conn[s] = -1;
    this.freeSlots[this.nfreeSlots++] = s;
    const ri = this.slotRec[s]!;
    const r = this.recs[ri]!;
    if (status < 0 && r.status === 0) r.status = status;
    r.parts--;
    if (r.parts === 0 && r.issued) this.finishRec(ri);
  }

  private finishRec(ri: number): void {
    const r = this.recs[ri]!;
    const io = r.io!;
    r.io = undefined;
    this.freeRecs[this.nfreeRecs++] = ri;
    io.status = r.status;
    this.inflightCount--;
    this.completed++;
    io.done(io);
  }

  /** Copy `len` bytes from host address `src` (-1: zeroes) into the slot's part of its I/O's buffers. */
  private scatter(s: number, reqOffset: number, src: number, len: number): void {
    const io = this.recs[this.slotRec[s]!]!.io!;
    let pos = this.slotIoOff[s]! + reqOffset;
    const n = this.n;
    for (let i = 0; i < io.niov && len > 0; i++) {
      const segLen = io.iov[2 * i + 1]!;
      if (pos >= segLen) {
        pos -= segLen;
        continue;
      }
      const k = Math.min(segLen - pos, len);
      const dst = io.iov[2 * i]! + pos;
      if (src < 0) n.memset(dst, 0, k);
      else {
        n.memcpy(dst, src, k);
        src += k;
      }
      len -= k;
      pos = 0;
    }
  }

  /** Send what the connection has queued: headers and WRITE payloads straight from guest memory. */
  private flushTx(c: Conn): void {
    const n = this.n;
    const t = this.table;
    const iovMax = n.IOV_MAX;
    while (c.txCount > 0) {
      let cnt = 0;
      let skip = c.txSent;
      let bytes = 0;
      for (let k = 0; k < c.txCount; k++) {
        const s = c.txq[(c.txHead + k) % SLOTS]!;
        const isWrite = t.cmd[s] === NBD_CMD_WRITE;
        const io = isWrite ? this.recs[this.slotRec[s]!]!.io! : undefined;
        if (cnt + 1 + (io ? io.niov : 0) > iovMax) break;
        cnt = this.iovPush(c, cnt, this.arena.addr + s * HDR_STRIDE, NBD_REQUEST_SIZE, skip);
        skip = Math.max(0, skip - NBD_REQUEST_SIZE);
        bytes += NBD_REQUEST_SIZE;
        if (io) {
          let pos = this.slotIoOff[s]!;
          let left = t.lenBytes[s]!;
          for (let i = 0; i < io.niov && left > 0; i++) {
            const segLen = io.iov[2 * i + 1]!;
            if (pos >= segLen) {
              pos -= segLen;
              continue;
            }
            const len = Math.min(segLen - pos, left);
            cnt = this.iovPush(c, cnt, io.iov[2 * i]! + pos, len, skip);
            skip = Math.max(0, skip - len);
            left -= len;
            bytes += len;
            pos = 0;
          }
        }
      }
      const built = bytes - c.txSent;
      const sent = n.sendIov(c.fd, c.iovAddr, cnt);
      if (sent === EAGAIN) return this.wantWritable(c, true);
      if (sent < 0) return this.lost(c, sent, 'send failed', -1);
      let left = sent;
      while (left > 0 && c.txCount > 0) {
        const s = c.txq[c.txHead]!;
        const rest = NBD_REQUEST_SIZE + (t.cmd[s] === NBD_CMD_WRITE ? t.lenBytes[s]! : 0) - c.txSent;
        if (left >= rest) {
          left -= rest;
          t.sent[s] = 1;
          c.txSent = 0;
          c.txHead = (c.txHead + 1) % SLOTS;
          c.txCount--;
        } else {
          c.txSent += left;
          left = 0;
        }
      }
      // The socket took less than offered: wait until it is writable again.
      if (sent < built) return this.wantWritable(c, true);
    }
    if (c.wantOut) this.wantWritable(c, false);
  }

  /** Append an iovec, leaving out the first `skip` bytes (already sent); returns the new count. */
  private iovPush(c: Conn, cnt: number, addr: number, len: number, skip: number): number {
    if (skip >= len) return cnt;
    addr += skip;
    len -= skip;
    putIovec(c.iovDv, cnt * IOVEC_BYTES, addr, len);
    return cnt + 1;
  }

  private wantWritable(c: Conn, on: boolean): void {
    if (c.wantOut === on) return;
    c.wantOut = on;
    const n = this.n;
    n.epollCtl(this.notifyFd, n.EPOLL_CTL_MOD, c.fd, on ? n.EPOLLIN | n.EPOLLOUT : n.EPOLLIN, c.id);
  }

  // ------------------------------------------------------------ connections

  private event(c: Conn, events: number): void {
    const n = this.n;
    switch (c.state) {
      case C_CONNECTING: {
        const err = n.soError(c.fd);
        if (err < 0) return this.attemptFailed(c, `connect: errno ${-err}`);
        if ((events & (n.EPOLLOUT | n.EPOLLERR | n.EPOLLHUP)) === 0) return;
        c.state = C_HANDSHAKE;
        c.hs = new NbdHandshake(this.p.exportName);
        n.epollCtl(this.notifyFd, n.EPOLL_CTL_MOD, c.fd, n.EPOLLIN, c.id);
        return this.pumpHandshake(c);
      }
      case C_HANDSHAKE:
        return this.readHandshake(c);
      case C_READY:
        if ((events & n.EPOLLOUT) !== 0 && c.wantOut) {
          this.wantWritable(c, false);
          this.flushTx(c);
          if (c.state !== C_READY) return;
        }
        this.readReplies(c);
        return;
    }
  }

  /** Read and handle what the socket holds; false if it held nothing (EAGAIN). */
  private readReplies(c: Conn): boolean {
    const n = this.n;
    let budget = RX_BUDGET;
    while (budget > 0 && c.state === C_READY) {
      const got = n.recvAt(c.fd, c.rxAddr, RX_BYTES);
      if (got === EAGAIN) return budget !== RX_BUDGET;
      if (got < 0) {
        this.lost(c, got, 'receive failed', -1);
        return true;
      }
      if (got === 0) {
        this.lost(c, 0, 'server closed the connection', -1);
        return true;
      }
      this.feedAddr = c.rxAddr;
      const rc = c.reader!.feed(c.rx, 0, got);
      if (rc < 0) {
        this.lost(c, rc, `protocol violation: ${c.reader!.why}`, c.reader!.failedSlot);
        return true;
      }
      budget -= got;
      // A short read emptied the socket; asking again would only say EAGAIN
      // (more bytes arriving later make the level-triggered epoll readable).
      if (got < RX_BYTES) return true;
    }
    return true;
  }

  private connect(c: Conn, now: number): void {
    const n = this.n;
    const p = this.p;
    const fd = p.transport === 'tcp' ? n.tcpConnect(p.addr, p.port) : n.unixConnectNb(p.addr);
    if (fd < 0) return this.attemptFailed(c, `connect: errno ${-fd}`);
    c.fd = fd;
    if (p.transport === 'tcp') n.tcpNodelay(fd);
    c.state = C_CONNECTING;
    c.deadline = now + p.connectTimeoutMs;
    c.wantOut = false;
    n.epollCtl(this.notifyFd, n.EPOLL_CTL_ADD, fd, n.EPOLLOUT | n.EPOLLIN, c.id);
  }

  /**
   * A pass reads at most HS_BUDGET bytes (the rest waits for the next poll, the
   * epoll is level-triggered) and stops at the connect deadline: a server that
   * streams option replies cannot hold the reactor; NbdHandshake caps the total.
   */
  private readHandshake(c: Conn): void {
    const n = this.n;
    for (let budget = HS_BUDGET; budget > 0; ) {
      if (performance.now() >= c.deadline) return this.attemptFailed(c, 'connect timed out');
      const got = n.recvAt(c.fd, c.rxAddr, Math.min(RX_BYTES, budget));
      if (got === EAGAIN) return;
      if (got <= 0) return this.attemptFailed(c, got === 0 ? 'server closed the connection during the handshake' : `handshake receive: errno ${-got}`);
      budget -= got;
      c.hs!.push(c.rx.subarray(0, got));
      this.pumpHandshake(c);
      if (c.state !== C_HANDSHAKE) return;
    }
  }

  private pumpHandshake(c: Conn): void {
    const hs = c.hs!;
    for (let out = hs.takeOutput(); out !== undefined; out = hs.takeOutput()) {
      // Handshake messages are small and the socket buffer empty: a short send means trouble.
      const sent = this.n.sendBuf(c.fd, out, 0, out.length);
      if (sent !== out.length) return this.attemptFailed(c, `handshake send: ${sent < 0 ? `errno ${-sent}` : 'short write'}`);
    }
    if (hs.state === 'failed') return this.attemptFailed(c, hs.error);
    if (hs.state === 'done') {
      const why = this.incompatible(hs.result!);
      if (why) return this.attemptFailed(c, why);
      this.up(c, hs.result!);
    }
  }

  /**
   * A reconnect must reach the same export: no smaller, no capability vdx uses
   * lost. Hints (ROTATIONAL, SEND_DF...) may change. A grown export is
   * accepted; the bdev keeps the size it was created with.
   */
  private incompatible(r: NbdExportInfo): string | undefined {
    const p = this.p;
    if (r.sizeBytes < p.serverSizeBytes) return `export shrank from ${p.serverSizeBytes} to ${r.sizeBytes} bytes`;
    if (!p.readonly && (r.flags & NBD_FLAG_READ_ONLY) !== 0) return 'export became read-only';
    const used = NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | (this.conns.length > 1 ? NBD_FLAG_CAN_MULTI_CONN : 0);
    const caps = p.serverFlags & used;
    if ((r.flags & caps) !== caps) return `export lost capabilities (flags 0x${p.serverFlags.toString(16)} -> 0x${r.flags.toString(16)})`;
    if (r.sizeBytes > p.serverSizeBytes) {
      this.ctx.log('info', 'nbd export grew; the bdev keeps its size', { component: 'nbd', bdev: p.bdevName, uri: p.uri, sizeBytes: p.serverSizeBytes, serverSizeBytes: r.sizeBytes });
    }
    if (r.maxPayload < p.maxIoBytes) return `max payload shrank to ${r.maxPayload}`;
    if (r.minBlock > p.blockSize) return `minimum block grew to ${r.minBlock}`;
    return undefined;
  }

  private up(c: Conn, r: NbdExportInfo): void {
    c.hs = undefined;
    c.state = C_READY;
    c.reader = new ReplyReader(this.table, this, c.id, r.structured);
    c.txHead = c.txCount = c.txSent = 0;
    c.outstanding = 0;
    c.proven = false;
    this.ready++;
    // New I/O is taken again (it is what can prove the connection); back-off
    // and the outage clock wait for proven().
    this.failFast = false;
  }

  /** The connection's first valid reply: the server serves again. */
  private proven(c: Conn): void {
    c.proven = true;
    c.backoffMs = 0;
    if (c.failures > 0) this.ctx.log('info', 'nbd connection restored', { component: 'nbd', bdev: this.p.bdevName, uri: this.p.uri, connection: c.id, after: c.failures });
    c.failures = 0;
  }

  private closeFd(c: Conn): void {
    if (c.fd >= 0) this.n.close(c.fd); // close() also drops it from the private epoll
    c.fd = -1;
    c.wantOut = false;
  }

  private attemptFailed(c: Conn, why: string): void {
    this.closeFd(c);
    c.hs = undefined;
    c.state = C_DOWN;
    c.backoffMs = c.backoffMs === 0 ? BACKOFF_FIRST_MS : Math.min(c.backoffMs * 2, BACKOFF_CAP_MS);
    c.retryAt = performance.now() + c.backoffMs;
    // Log the first failure and then about once a minute at the cap.
    if (c.failures++ % 30 === 0) this.ctx.log('warn', 'nbd connect failed; retrying', { component: 'nbd', bdev: this.p.bdevName, uri: this.p.uri, connection: c.id, failures: c.failures, why });
  }

  /** The connection died: its requests go back to the queue (one at fault fails), and it reconnects. */
  private lost(c: Conn, err: number, why: string, failedSlot: number): void {
    const t = this.table;
    const now = performance.now();
    const proven = c.proven;
    // A connection that never served is a failed attempt: rate-limited log, back-off grows.
    if (proven || c.failures % 30 === 0) {
      this.ctx.log('warn', 'nbd connection lost; reconnecting', { component: 'nbd', bdev: this.p.bdevName, uri: this.p.uri, connection: c.id, errno: -err, why, failures: c.failures });
    }
    this.closeFd(c);
    c.state = C_DOWN;
    c.reader = undefined;
    c.proven = false;
    this.ready--;
    if (proven) this.lastGood = now;
    if (this.ready === 0) this.downSince = this.lastGood;
    // The request a violation was about fails; retrying it would meet the same answer.
    if (failedSlot >= 0 && t.conn[failedSlot] === c.id && t.cmd[failedSlot] !== SLOT_FREE) this.finishSlot(failedSlot, EIO);
    const bound = this.retryBoundMs;
    for (let s = 0; s < SLOTS; s++) {
      if (t.cmd[s] !== SLOT_FREE && t.conn[s] === c.id) {
        if (now - this.slotFirstAt[s]! >= bound) this.finishSlot(s, EIO);
        else {
          t.conn[s] = -1;
          this.unsent.push(s);
        }
      }
    }
    c.outstanding = 0;
    if (!this.anyOutstanding()) this.ioCheckAt = Infinity;
    c.txHead = c.txCount = c.txSent = 0;
    if (proven) {
      c.backoffMs = 0;
      c.failures = 1;
      c.retryAt = now;
    } else {
      c.backoffMs = c.backoffMs === 0 ? BACKOFF_FIRST_MS : Math.min(c.backoffMs * 2, BACKOFF_CAP_MS);
      c.failures++;
      c.retryAt = now + c.backoffMs;
    }
  }

  /**
   * The timer reached ioCheckAt: drop each connection with a request past its
   * deadline, io-timeout after it was sent or the retry bound after it was
   * first submitted (lost() fails the requests past the bound and retries the
   * others on a new connection); look again at the earliest remaining deadline. Completions do not move ioCheckAt (at queue depth 1
   * that would be two timerfd_settime calls per I/O): an early look just
   * rescans, and the timer is disarmed here once nothing is out.
   */
  private checkReplyDeadlines(now: number): void {
    const t = this.table;
    const conns = this.conns;
    const limit = this.p.ioTimeoutMs;
    const bound = this.retryBoundMs;
    for (let i = 0; i < conns.length; i++) conns[i]!.due = Infinity;
    for (let s = 0; s < SLOTS; s++) {
      const ci = t.conn[s]!;
      if (ci < 0 || t.cmd[s] === SLOT_FREE) continue;
      const c = conns[ci]!;
      const due = Math.min(this.slotSentAt[s]! + limit, this.slotFirstAt[s]! + bound);
      if (due < c.due) c.due = due;
    }
    let next = Infinity;
    for (let i = 0; i < conns.length; i++) {
      const c = conns[i]!;
      if (c.state !== C_READY || c.due === Infinity) continue;
      if (now >= c.due) {
        this.lost(c, ETIMEDOUT, `no reply within io-timeout (${limit / 1000} s)`, -1);
      } else if (c.due < next) next = c.due;
    }
    this.ioCheckAt = next;
  }

  /** Reconnects due, connect deadlines, and the reconnect timeout for waiting I/O. */
  private timePass(now: number): void {
    for (let i = 0; i < this.conns.length; i++) {
      const c = this.conns[i]!;
      if (c.state === C_DOWN && now >= c.retryAt) this.connect(c, now);
      else if ((c.state === C_CONNECTING || c.state === C_HANDSHAKE) && now >= c.deadline) this.attemptFailed(c, 'connect timed out');
    }
    if (this.ready === 0 && !this.failFast && now - this.downSince >= this.p.reconnectTimeoutMs) {
      if (this.unsent.count > 0 || this.issueCount > 0 || this.backlog.size() > 0) {
        this.ctx.log('error', 'nbd server unreachable: failing I/O with EIO until it is back', { component: 'nbd', bdev: this.p.bdevName, uri: this.p.uri, seconds: this.p.reconnectTimeoutMs / 1000 });
      }
      this.failWaiting();
    }
  }

  private failWaiting(): void {
    this.failFast = true;
    for (let k = this.unsent.count; k > 0; k--) this.finishSlot(this.unsent.shift(), EIO);
    while (this.issueCount > 0) {
      const ri = this.toIssue[this.issueHead]!;
      this.issueHead = (this.issueHead + 1) % RECS;
      this.issueCount--;
      const r = this.recs[ri]!;
      if (r.status === 0) r.status = EIO;
      r.issued = true;
      if (r.parts === 0) this.finishRec(ri);
    }
    for (let io = this.backlog.shift(); io !== undefined; io = this.backlog.shift()) this.later(io, EIO);
  }

  private updateTimer(now: number): void {
    let at = Infinity;
    for (let i = 0; i < this.conns.length; i++) {
      const c = this.conns[i]!;
      if (c.state === C_DOWN) at = Math.min(at, c.retryAt);
      else if (c.state !== C_READY) at = Math.min(at, c.deadline);
    }
    if (this.ready === 0 && !this.failFast) at = Math.min(at, this.downSince + this.p.reconnectTimeoutMs);
    if (this.ioCheckAt < at) at = this.ioCheckAt;
    if (at === this.armedAt) return;
    this.armedAt = at;
    this.n.timerfdSet(this.timerFd, at === Infinity ? 0 : Math.max(0.05, at - now));
  }
}
