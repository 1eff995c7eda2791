// The vhost-user in-flight region for packed rings (INFLIGHT_SHMFD). Field
// offsets are those of vhost-user.rst's QueueRegionPacked / DescStatePacked
// (DPDK's rte_vhost_inflight_info_packed); how they are kept is vdx's own, as
// the spec leaves it to the back-end, which is the only one to read it again.
//
// Why copies of descriptors: a packed ring's used descriptor is written over
// the ring slot at the used position, and completions are out of order, so
// that slot may still hold a descriptor of a request in flight. After a crash
// the ring alone cannot say what was in flight; the region keeps a copy of
// every fetched ring descriptor until its buffer is used.
//
// Per queue (stride align64(32 + 32 * descNum)):
//   0  u64 features            0
//   8  u16 version             1; 0 = never used (fresh region, or a VM reset)
//   10 u16 desc_num            queue_size of GET_INFLIGHT_FD
//   12 u16 free_head, 14 old_free_head: 0, unused (the pool's free list lives
//          in the daemon, rebuilt from the in-flight chains on recovery)
//   16 u16 used_idx            where the used descriptor being written ends
//                              (pending): position | wrap counter << 15, one
//                              store, so a kill cannot split the pair
//   18 u16 old_used_idx        the next used position, the same way; every
//                              completion before it is done
//   20 u8, 21 u8 (the wrap counters in the rst): 0, unused (in bit 15 above)
//   22 u16 (padding in the rst) first entry of the chain being completed
//   32 desc[desc_num], 32 bytes each, a pool of copied ring descriptors:
//      0 u8 inflight (1 on a chain's first entry while its buffer is out)
//      2 u16 next (the chain's next entry), 4 u16 last (its final entry),
//      6 u16 num (ring descriptors in the chain), 8 u64 counter (fetch order),
//      16 u16 id, 18 u16 flags, 20 u32 len, 24 u64 addr (the ring descriptor)
//
// Order of writes (a SIGKILL can stop us between any two):
//   fetch:    each descriptor copied into a free entry as the chain is walked,
//             then num/last/counter of the first, then its inflight = 1;
//   complete: the chain's entry, used_idx/used_wrap = the position after the
//             buffer (pending),
//             the used descriptor (id, len, then flags), inflight = 0,
//             old_used_idx/old_used_wrap = used_idx/used_wrap (done).
// So after a crash, old_used is exact unless a completion was pending; then
// the ring slot at old_used says whether its used descriptor was written
// (recoverPacked). Every in-flight chain was fetched and not used, so the next
// descriptor to fetch is old_used plus the ring descriptors of all of them.
//
// The region is shared with the front-end, which may rewrite it at any time:
// the daemon writes the chains' shape there for its successor but reads it
// back only once, checked, when it inherits the region (the constructor);
// on the hot path it reads its own copy.

import { VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED } from './packed-ring.js';

export const INFLIGHT_PACKED_VERSION = 1;
const HDR = 32;
const DESC = 32;
const WRAP_BIT = 1 << 15;
const NONE = 0xffff;

/** Bytes of one queue's part of the region. */
export function inflightPackedStride(descNum: number): number {
  return (HDR + DESC * descNum + 63) & ~63;
}

/** One queue's in-flight record, written on the reactor's hot path. */
export class PackedInflight {
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  /** fetch-order stamp for the next chain (u64 in the region; exact in a double up to 2^53) */
  counter: number;
  /** free pool entries (a stack) */
  private readonly free: Uint16Array;
  private freeTop = 0;
  /** buffer id -> first entry of its chain, NONE when the id is not in flight */
  private readonly headOf: Uint16Array;
  /** our copy of the chains' shape: next entry, and for a first entry its length and buffer id */
  private readonly link: Uint16Array;
  private readonly lengthOf: Uint16Array;
  private readonly idOf: Uint16Array;
  /** the chain being fetched */
  private chainHead = NONE;
  private chainLast = NONE;
  private chainNum = 0;

  /**
   * `resubmit`: the first entries of the chains a previous daemon left in
   * flight (recoverPacked checked them); their entries stay taken. Throws if
   * the region no longer says what was checked.
   */
  constructor(buffer: ArrayBuffer, offset: number, readonly descNum: number, nextCounter: number, resubmit: readonly number[]) {
    const bytes = inflightPackedStride(descNum);
    this.u8 = new Uint8Array(buffer, offset, bytes);
    this.u16 = new Uint16Array(buffer, offset, bytes >> 1);
    this.u32 = new Uint32Array(buffer, offset, bytes >> 2);
    this.counter = nextCounter;
    this.free = new Uint16Array(descNum);
    this.headOf = new Uint16Array(descNum).fill(NONE);
    this.link = new Uint16Array(descNum);
    this.lengthOf = new Uint16Array(descNum);
    this.idOf = new Uint16Array(descNum);
    const taken = new Uint8Array(descNum);
    const changed = (why: string) => new Error(`the in-flight region changed after it was checked: ${why}`);
    for (const head of resubmit) {
      const num = this.u16[(HDR + DESC * head + 6) >> 1]!;
      if (head >= descNum || num < 1 || num > descNum) throw changed(`entry ${head} holds a chain of ${num}`);
      let e = head;
      for (let k = 0; k < num; k++) {
        if (e >= descNum || taken[e]) throw changed(`chain at entry ${head} runs into entry ${e}`);
        taken[e] = 1;
        const next = this.u16[(HDR + DESC * e + 2) >> 1]!;
        this.link[e] = next;
        if (k < num - 1) e = next;
      }
      const id = this.u16[(HDR + DESC * e + 16) >> 1]!;
      if (id >= descNum || this.headOf[id] !== NONE) throw changed(`buffer id ${id} of the chain at entry ${head}`);
      this.lengthOf[head] = num;
      this.idOf[head] = id;
      this.headOf[id] = head;
    }
    for (let e = descNum - 1; e >= 0; e--) if (!taken[e]) this.free[this.freeTop++] = e;
  }

  /** Descriptors in the chain starting at entry `e`. */
  num(e: number): number {
    return this.lengthOf[e]!;
  }
  /** the buffer id of the chain starting at entry `e` */
  chainId(e: number): number {
    return this.idOf[e]!;
  }

  /** Copy ring descriptor `pos` (ring32: a view of the ring) into the chain being fetched; false when the pool is empty. */
  copy(ring32: Uint32Array, pos: number): boolean {
    if (this.freeTop === 0) return false;
    const e = this.free[--this.freeTop]!;
    const w = (HDR + DESC * e) >> 2;
    const u32 = this.u32;
    const r = pos << 2;
    // id and flags sit in the same order at ring byte 12 and entry byte 16: one word.
    u32[w + 4] = ring32[r + 3]!;
    u32[w + 5] = ring32[r + 2]!;
    u32[w + 6] = ring32[r]!;
    u32[w + 7] = ring32[r + 1]!;
    if (this.chainHead === NONE) this.chainHead = e;
    else {
      this.u16[(HDR + DESC * this.chainLast + 2) >> 1] = e;
      this.link[this.chainLast] = e;
    }
    this.chainLast = e;
    this.chainNum++;
    return true;
  }

  /** The chain walk failed: its entries go back to the pool. */
  abort(): void {
    let e = this.chainHead;
    for (let k = this.chainNum; k > 0; k--) {
      this.free[this.freeTop++] = e;
      e = this.link[e]!;
    }
    this.chainHead = NONE;
    this.chainLast = NONE;
    this.chainNum = 0;
  }

  /** The chain is whole and carries buffer `id`: record it in flight. False (and aborted) when `id` already is. */
  commit(id: number): boolean {
    if (this.headOf[id] !== NONE) {
      this.abort();
      return false;
    }
    const h = this.chainHead;
    const b = HDR + DESC * h;
    this.u16[(b + 4) >> 1] = this.chainLast;
    this.u16[(b + 6) >> 1] = this.chainNum;
    const c = this.counter++;
    this.u32[(b + 8) >> 2] = c >>> 0;
    this.u32[(b + 12) >> 2] = (c / 0x1_0000_0000) >>> 0;
    this.u8[b] = 1;
    this.lengthOf[h] = this.chainNum;
    this.idOf[h] = id;
    this.headOf[id] = h;
    this.chainHead = NONE;
    this.chainLast = NONE;
    this.chainNum = 0;
    return true;
  }

  /** Buffer `id` is about to be written used; afterwards the used position is `pos` with wrap counter `wrap`. */
  completing(id: number, pos: number, wrap: number): void {
    this.u16[11] = this.headOf[id]!;
    this.u16[8] = pos | (wrap << 15);
  }

  /** The used descriptor of `id` is written: it is no longer in flight. */
  completed(id: number): void {
    const h = this.headOf[id]!;
    if (h !== NONE) {
      this.u8[HDR + DESC * h] = 0;
      this.headOf[id] = NONE;
      let e = h;
      for (let k = this.lengthOf[h]!; k > 0; k--) {
        this.free[this.freeTop++] = e;
        e = this.link[e]!;
      }
    }
    this.u16[9] = this.u16[8]!;
  }

  /** The stored ring descriptor of entry `e`, written in the ring's layout into `out` at 0; returns the chain's next entry. */
  stored(e: number, out: DataView): number {
    const w = (HDR + DESC * e) >> 2;
    out.setUint32(0, this.u32[w + 6]!, true);
    out.setUint32(4, this.u32[w + 7]!, true);
    out.setUint32(8, this.u32[w + 5]!, true);
    out.setUint16(12, this.u16[2 * w + 8]!, true);
    out.setUint16(14, this.u16[2 * w + 9]!, true);
    return this.link[e]!;
  }
}

export interface PackedRecovery {
  /** next descriptor to fetch, and the used position: index | wrap counter << 15 */
  availState: number;
  usedState: number;
  /** first entries of the chains to run again before any new descriptor, oldest fetch first */
  resubmit: number[];
  nextCounter: number;
  /** false: a fresh region, nothing was inherited */
  inherited: boolean;
}

/**
 * Decide how a packed queue resumes from its part of the region, and bring the
 * region up to date (a fresh one gets its header; a completion a crash cut
 * short is rolled back or finished). `ringFlags(pos)` reads the flags of ring
 * descriptor `pos` from guest memory; `base` is the
 * front-end's SET_VRING_BASE (avail state | used state << 16), used only for a
 * fresh region: after a crash QEMU's packed base is stale. Returns an error
 * string for a region that cannot be trusted; it is then left as it was.
 */
export function recoverPacked(
  buffer: ArrayBuffer,
  offset: number,
  descNum: number,
  vringNum: number,
  ringFlags: (pos: number) => number | undefined,
  base: number,
): PackedRecovery | string {
  const bytes = inflightPackedStride(descNum);
  const v = new DataView(buffer, offset, bytes);
  const version = v.getUint16(8, true);
  if (version === 0) {
    const avail = base & 0xffff;
    const used = base >>> 16;
    if ((avail & 0x7fff) >= vringNum || (used & 0x7fff) >= vringNum) return `vring base ${base.toString(16)} is outside a ring of ${vringNum}`;
    new Uint8Array(buffer, offset, bytes).fill(0);
    v.setUint16(8, INFLIGHT_PACKED_VERSION, true);
    v.setUint16(10, descNum, true);
    for (const at of [16, 18]) v.setUint16(at, used, true);
    return { availState: avail, usedState: used, resubmit: [], nextCounter: 0, inherited: false };
  }
  if (version !== INFLIGHT_PACKED_VERSION) return `in-flight region version ${version}, expected ${INFLIGHT_PACKED_VERSION}`;
  const regionNum = v.getUint16(10, true);
  if (regionNum !== descNum) return `in-flight region is for ${regionNum} descriptors, the front-end said ${descNum}`;
  if (vringNum > descNum) return `ring of ${vringNum} descriptors does not fit an in-flight region of ${descNum}`;
  const oldPos = v.getUint16(18, true) & 0x7fff;
  const oldWrap = v.getUint16(18, true) >>> 15;
  let pos = v.getUint16(16, true) & 0x7fff;
  let wrap = v.getUint16(16, true) >>> 15;
  if (oldPos >= vringNum || pos >= vringNum) return `used position ${Math.max(oldPos, pos)} is outside a ring of ${vringNum}`;

  const at = (e: number) => HDR + DESC * e;
  const heads: number[] = [];
  const owner = new Int32Array(descNum).fill(-1);
  const ids = new Map<number, number>();
  let inFlight = 0;
  for (let e = 0; e < descNum; e++) {
    const f = v.getUint8(at(e));
    if (f > 1) return `in-flight flag of entry ${e} is ${f}`;
    if (f === 0) continue;
    const num = v.getUint16(at(e) + 6, true);
    if (num < 1 || num > vringNum) return `in-flight entry ${e} has a chain of ${num} descriptors on a ring of ${vringNum}`;
    let x = e;
    for (let k = 0; k < num; k++) {
      if (x >= descNum) return `in-flight chain at entry ${e} links to entry ${x} of ${descNum}`;
      if (owner[x] !== -1) return `entries of in-flight chains ${owner[x]} and ${e} overlap at ${x}`;
      owner[x] = e;
      if (k < num - 1) x = v.getUint16(at(x) + 2, true);
    }
    if (v.getUint16(at(e) + 4, true) !== x) return `in-flight chain at entry ${e} does not end where its last says`;
    const id = v.getUint16(at(x) + 16, true);
    if (id >= vringNum) return `in-flight chain at entry ${e} carries buffer id ${id} on a ring of ${vringNum}`;
    if (ids.has(id)) return `buffer id ${id} is in flight twice (entries ${ids.get(id)} and ${e})`;
    ids.set(id, e);
    heads.push(e);
    inFlight += num;
  }

  // A completion was cut short: did its used descriptor reach the ring?
  let finished = -1;
  if (pos !== oldPos || wrap !== oldWrap) {
    const span = (wrap === oldWrap ? 0 : vringNum) + pos - oldPos;
    if (span < 1 || span > vringNum) return `pending used position ${pos} (wrap ${wrap}) is not ahead of ${oldPos} (wrap ${oldWrap})`;
    const flags = ringFlags(oldPos);
    if (flags === undefined) return `ring descriptor ${oldPos} is outside guest memory`;
    const availInLap = ((flags & VRING_PACKED_DESC_F_AVAIL) !== 0) === (oldWrap === 1) && ((flags & VRING_PACKED_DESC_F_USED) !== 0) !== (oldWrap === 1);
    if (availInLap) {
      // Still the descriptor we fetched: the buffer was not used and stays in flight.
      pos = oldPos;
      wrap = oldWrap;
    } else {
      // Written (the driver may already have made the slot available for its next lap): done.
      const e = v.getUint16(22, true);
      if (e < descNum && v.getUint8(at(e)) === 1) {
        const num = v.getUint16(at(e) + 6, true);
        if (num !== span) return `the used descriptor at ${oldPos} spans ${span} descriptors, its chain (entry ${e}) ${num}`;
        finished = e;
        inFlight -= num;
        heads.splice(heads.indexOf(e), 1);
      }
    }
  }
  if (inFlight > vringNum) return `${inFlight} descriptors in flight on a ring of ${vringNum}`;
  const stamp = (e: number) => v.getUint32(at(e) + 8, true) + v.getUint32(at(e) + 12, true) * 0x1_0000_0000;
  const stamps = heads.map(stamp);
  if (stamps.some((c) => !Number.isSafeInteger(c))) return 'in-flight counter beyond 2^53';
  if (new Set(stamps).size !== stamps.length) return 'two in-flight chains carry the same counter';
  const order = heads.map((e, k) => ({ e, c: stamps[k]! })).sort((a, b) => a.c - b.c);

  // Trusted from here on.
  if (finished >= 0) v.setUint8(at(finished), 0);
  v.setUint16(16, pos | (wrap << 15), true);
  v.setUint16(18, pos | (wrap << 15), true);
  let availPos = pos + inFlight;
  let availWrap = wrap;
  if (availPos >= vringNum) {
    availPos -= vringNum;
    availWrap ^= 1;
  }
  return {
    availState: availPos | (availWrap ? WRAP_BIT : 0),
    usedState: pos | (wrap ? WRAP_BIT : 0),
    resubmit: order.map((o) => o.e),
    nextCounter: order.length > 0 ? order[order.length - 1]!.c + 1 : 0,
    inherited: true,
  };
}
