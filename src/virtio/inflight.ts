// The vhost-user in-flight region for split rings (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD,
// docs/interop/vhost-user.rst "Inflight I/O tracking"), in libvhost-user's layout so
// a vdx of another version, or libvhost-user itself, can inherit it. QEMU keeps
// the memfd across a back-end's death and hands it to the next one; what this
// daemon wrote before a SIGKILL is all the next one knows of what was in flight.
//
// Per queue (stride align64(16 + 16 * descNum)):
//   0  u64 features        0
//   8  u16 version         1; 0 = never used (fresh region, or a VM reset)
//   10 u16 desc_num        queue_size of GET_INFLIGHT_FD
//   12 u16 last_batch_head head of the list of the last published used batch
//   14 u16 used_idx        used->idx as of the last published batch
//   16 desc[desc_num], 16 bytes each, indexed by descriptor head:
//      0 u8 inflight, 6 u16 next (batch list link), 8 u64 counter (fetch order)
//
// Order of writes (a SIGKILL can stop us between any two):
//   fetch:    counter, then inflight = 1, then the request goes out;
//   complete: next/last_batch_head for each head of the batch, used->idx (the
//             guest sees them), inflight = 0 for each, then used_idx.
// So after a crash a head is either still in flight (resubmitted), or in a
// batch the guest saw whose flags may not all be cleared: used_idx differs from
// used->idx and the batch list says which heads to clear (recoverSplit).
//
// The region is guest-adjacent input: it came over the socket, and a previous
// process (or a hostile front-end) may have written anything into it.

/** Bytes of one queue's part of the region. */
export function inflightSplitStride(descNum: number): number {
  return (16 + 16 * descNum + 63) & ~63;
}

export const INFLIGHT_VERSION = 1;
const HDR = 16;
const DESC = 16;

/** One queue's in-flight record, written on the reactor's hot path. */
export class SplitInflight {
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  /** fetch-order stamp for the next head (u64 in the region; exact in a double up to 2^53) */
  counter: number;

  constructor(buffer: ArrayBuffer, offset: number, readonly descNum: number, nextCounter: number) {
    const bytes = inflightSplitStride(descNum);
    this.u8 = new Uint8Array(buffer, offset, bytes);
    this.u16 = new Uint16Array(buffer, offset, bytes >> 1);
    this.u32 = new Uint32Array(buffer, offset, bytes >> 2);
    this.counter = nextCounter;
  }

  /** A head was taken from the avail ring and is about to be submitted. */
  fetched(head: number): void {
    const c = this.counter++;
    const w = (HDR + DESC * head) >> 2;
    this.u32[w + 2] = c >>> 0;
    this.u32[w + 3] = (c / 0x1_0000_0000) >>> 0;
    this.u8[HDR + DESC * head] = 1;
  }

  /** A head's used entry was written; it joins the batch the next publish shows. */
  pushed(head: number): void {
    this.u16[(HDR + DESC * head + 6) >> 1] = this.u16[6]!;
    this.u16[6] = head;
  }

  /** used->idx moved from `old` to `now` (the guest can see the batch): clear its heads. */
  published(old: number, now: number): void {
    const u16 = this.u16;
    let head = u16[6]!;
    for (let k = (now - old) & 0xffff; k > 0; k--) {
      this.u8[HDR + DESC * head] = 0;
      head = u16[(HDR + DESC * head + 6) >> 1]!;
    }
    u16[7] = now;
  }
}

export interface SplitRecovery {
  /** next avail index to read: used->idx + the number still in flight */
  lastAvail: number;
  /** heads to run again before any new avail entry, oldest fetch first */
  resubmit: number[];
  /** the counter to continue from */
  nextCounter: number;
  /** false: a fresh region, nothing was inherited */
  inherited: boolean;
}

/**
 * Decide how a queue resumes from its part of the region and the used index
 * the guest sees (read from guest memory), as libvhost-user's
 * vu_check_queue_inflights does, and bring the region up to date (a fresh
 * region gets its header; a batch the guest saw gets its flags cleared).
 * Returns an error string for a region that cannot be trusted; then nothing is
 * resubmitted and the region is left as it was.
 */
export function recoverSplit(buffer: ArrayBuffer, offset: number, descNum: number, vringNum: number, usedIdx: number): SplitRecovery | string {
  const v = new DataView(buffer, offset, inflightSplitStride(descNum));
  const version = v.getUint16(8, true);
  if (version === 0) {
    // Fresh: whatever the bytes say, nothing was in flight.
    new Uint8Array(buffer, offset, inflightSplitStride(descNum)).fill(0);
    v.setUint16(8, INFLIGHT_VERSION, true);
    v.setUint16(10, descNum, true);
    v.setUint16(14, usedIdx, true);
    return { lastAvail: usedIdx, resubmit: [], nextCounter: 0, inherited: false };
  }
  if (version !== INFLIGHT_VERSION) return `in-flight region version ${version}, expected ${INFLIGHT_VERSION}`;
  const regionNum = v.getUint16(10, true);
  if (regionNum !== descNum) return `in-flight region is for ${regionNum} descriptors, the front-end said ${descNum}`;
  if (vringNum > descNum) return `ring of ${vringNum} descriptors does not fit an in-flight region of ${descNum}`;
  const flag = (i: number) => v.getUint8(HDR + DESC * i);
  const next = (i: number) => v.getUint16(HDR + DESC * i + 6, true);
  const counter = (i: number) => v.getUint32(HDR + DESC * i + 8, true) + v.getUint32(HDR + DESC * i + 12, true) * 0x1_0000_0000;
  // Died after used->idx moved and before the batch's flags were cleared.
  const lag = (usedIdx - v.getUint16(14, true)) & 0xffff;
  const toClear: number[] = [];
  if (lag !== 0) {
    if (lag > vringNum) return `used index ${usedIdx} is ${lag} entries past the region's ${v.getUint16(14, true)} on a ring of ${vringNum}`;
    let head = v.getUint16(12, true);
    for (let k = 0; k < lag; k++) {
      if (head >= vringNum) return `in-flight batch list names descriptor ${head} on a ring of ${vringNum}`;
      toClear.push(head);
      head = next(head);
    }
  }
  const cleared = new Set(toClear);
  if (cleared.size !== toClear.length) return 'in-flight batch list names a descriptor twice';
  const live: number[] = [];
  for (let i = 0; i < descNum; i++) {
    const f = flag(i);
    if (f > 1) return `in-flight flag of descriptor ${i} is ${f}`;
    if (f === 1 && !cleared.has(i)) {
      if (i >= vringNum) return `descriptor ${i} is in flight on a ring of ${vringNum}`;
      live.push(i);
    }
  }
  if (live.length > vringNum) return `${live.length} descriptors in flight on a ring of ${vringNum}`;
  const stamps = live.map(counter);
  if (stamps.some((c) => !Number.isSafeInteger(c))) return 'in-flight counter beyond 2^53';
  if (new Set(stamps).size !== stamps.length) return 'two in-flight descriptors carry the same counter';
  const order = live.map((head, k) => ({ head, c: stamps[k]! })).sort((a, b) => a.c - b.c);
  // Trusted from here on: bring the region to what the guest sees.
  for (const h of toClear) v.setUint8(HDR + DESC * h, 0);
  v.setUint16(14, usedIdx, true);
  return {
    lastAvail: (usedIdx + live.length) & 0xffff,
    resubmit: order.map((o) => o.head),
    nextCounter: order.length > 0 ? order[order.length - 1]!.c + 1 : 0,
    inherited: true,
  };
}
