// Split virtqueue, device side (virtio 1.2 §2.7). Every index, length and address
// read from the ring is guest input: a bad chain fails its request (negative
// errno from mapChain); a bad ring marks the queue broken for good.
import { E } from './errno.js';
import {
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
} from './constants.js';
import { DESC_SIZE, findIndirectTable, mapDataDescriptor, type IndirectTable } from './descriptor.js';
import type { SplitInflight } from './inflight.js';
import type { GuestMemory } from './memory.js';
import type { Virtqueue } from './virtqueue.js';

export { DESC_SIZE, MAX_INDIRECT } from './descriptor.js';

/** Where the three parts of a split ring live: window index and byte offset for each. */
export interface SplitRingLayout {
  size: number;
  desc: { window: number; offset: number };
  avail: { window: number; offset: number };
  used: { window: number; offset: number };
}

export const NO_HEAD = -1;
export const BROKEN = -2;

export function splitRingBytes(size: number): { desc: number; avail: number; used: number } {
  return { desc: DESC_SIZE * size, avail: 6 + 2 * size, used: 6 + 8 * size };
}

/** Checks a layout before any view is made: power-of-two size, alignment (§2.7), inside its windows. */
export function checkSplitLayout(mem: GuestMemory, l: SplitRingLayout): string | undefined {
  if (!Number.isInteger(l.size) || l.size < 1 || l.size > 32768 || (l.size & (l.size - 1)) !== 0) {
    return `queue size ${l.size} is not a power of two in 1..32768`;
  }
  const bytes = splitRingBytes(l.size);
  const parts: [string, { window: number; offset: number }, number, number][] = [
    ['descriptor table', l.desc, bytes.desc, 16],
    ['available ring', l.avail, bytes.avail, 2],
    ['used ring', l.used, bytes.used, 4],
  ];
  for (const [name, at, len, align] of parts) {
    const w = mem.windows[at.window];
    if (!w || at.offset < 0 || at.offset + len > w.lenBytes) return `${name} is outside guest memory`;
    if ((w.hostAddr + at.offset) % align !== 0) return `${name} is not ${align}-byte aligned`;
    if (name === 'used ring' && w.readonly) return 'used ring is in read-only memory';
  }
  return undefined;
}

export class SplitRing implements Virtqueue {
  readonly size: number;
  private readonly mask: number;
  private readonly descDv: DataView;
  private readonly descOff: number;
  private readonly avail: Uint16Array;
  private readonly usedHdr: Uint16Array;
  private readonly usedEntries: Uint32Array;
  /** next avail-ring index we will read (free-running u16) */
  lastAvail: number;
  /** next used-ring index we will fill (free-running u16) */
  usedIdx: number;
  private publishedUsed: number;
  /**
   * The avail index as last read. Heads up to it are popped without reading
   * the index again: the driver rewrites that cache line on every submission,
   * so one read per batch (as DPDK's vhost does per burst) instead of one per
   * head saves a line transfer between the cores per request.
   */
  private availEnd: number;
  /** why the ring is unusable; set once, never cleared */
  broken: string | undefined;
  private readonly table: IndirectTable = { window: 0, offset: 0, entries: 0 };
  /** the in-flight region (vhost-user INFLIGHT_SHMFD), kept on every fetch and publish */
  private readonly inflight: SplitInflight | undefined;
  /** heads a previous daemon left in flight, served before the avail ring */
  private readonly resubmit: Uint16Array;
  private resubmitAt = 0;

  constructor(
    private readonly mem: GuestMemory,
    layout: SplitRingLayout,
    readonly eventIdx: boolean,
    readonly indirect: boolean,
    /** SET_VRING_BASE: where the driver's avail ring resumes */
    base = 0,
    /** used index already published (equal to base on a fresh or cleanly stopped ring) */
    usedBase = base,
    tracking?: { inflight: SplitInflight; resubmit: readonly number[] },
  ) {
    const bad = checkSplitLayout(mem, layout);
    if (bad) throw new RangeError(bad);
    this.size = layout.size;
    this.mask = layout.size - 1;
    const dw = mem.windows[layout.desc.window]!;
    this.descDv = dw.dv;
    this.descOff = layout.desc.offset;
    const aw = mem.windows[layout.avail.window]!;
    this.avail = new Uint16Array(aw.buffer, layout.avail.offset, 3 + layout.size);
    const uw = mem.windows[layout.used.window]!;
    this.usedHdr = new Uint16Array(uw.buffer, layout.used.offset, 2 + 4 * layout.size + 1);
    this.usedEntries = new Uint32Array(uw.buffer, layout.used.offset, 1 + 2 * layout.size);
    this.lastAvail = base & 0xffff;
    this.usedIdx = usedBase & 0xffff;
    this.publishedUsed = this.usedIdx;
    this.availEnd = this.lastAvail;
    this.inflight = tracking?.inflight;
    this.resubmit = Uint16Array.from(tracking?.resubmit ?? []);
  }

  /** Something new in the avail ring? (cheap; used to decide whether to keep polling) */
  availPending(): boolean {
    return this.resubmitAt < this.resubmit.length || this.availEnd !== this.lastAvail || Atomics.load(this.avail, 1) !== this.lastAvail;
  }

  /** Number of heads the driver has made available beyond lastAvail, or BROKEN. */
  availCount(): number {
    const n = (Atomics.load(this.avail, 1) - this.lastAvail) & 0xffff;
    if (n > this.size) {
      this.broken = `avail index moved ${n} entries ahead on a ring of ${this.size}`;
      return BROKEN;
    }
    return n;
  }

  /** Pop the next head: a descriptor index, NO_HEAD when empty, or BROKEN. */
  nextAvail(): number {
    if (this.broken !== undefined) return BROKEN;
    // Inherited heads keep their fetch stamps: their order survives another crash.
    if (this.resubmitAt < this.resubmit.length) return this.resubmit[this.resubmitAt++]!;
    if (this.availEnd === this.lastAvail) {
      const n = this.availCount();
      if (n <= 0) return n === 0 ? NO_HEAD : BROKEN;
      this.availEnd = (this.lastAvail + n) & 0xffff;
    }
    const head = this.avail[2 + (this.lastAvail & this.mask)]!;
    if (head >= this.size) {
      this.broken = `avail ring entry ${this.lastAvail} names descriptor ${head} on a ring of ${this.size}`;
      return BROKEN;
    }
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    this.inflight?.fetched(head);
    return head;
  }

  /**
   * Walk the chain at `head` into `segs` (SEG_STRIDE numbers per segment).
   * Returns the segment count or -errno: -ELOOP for a chain longer than its table,
   * -EINVAL for a bad index, flag combination or length, -EFAULT for an address
   * outside guest memory, -E2BIG for more than maxSegs segments.
   */
  mapChain(head: number, segs: Float64Array, maxSegs: number): number {
    let dv = this.descDv;
    let base = this.descOff;
    let tableSize = this.size;
    let idx = head;
    let steps = 0;
    let nseg = 0;
    let inIndirect = false;
    let sawWritable = false;
    for (;;) {
      if (++steps > tableSize) return -E.ELOOP;
      const at = base + idx * DESC_SIZE;
      const flags = dv.getUint16(at + 12, true);
      if (flags & VRING_DESC_F_INDIRECT) {
        if (!this.indirect || inIndirect || flags & VRING_DESC_F_NEXT) return -E.EINVAL;
        const t = this.table;
        const rc = findIndirectTable(this.mem, dv, at, t);
        if (rc < 0) return rc;
        dv = this.mem.windows[t.window]!.dv;
        base = t.offset;
        tableSize = t.entries;
        idx = 0;
        steps = 0;
        inIndirect = true;
        continue;
      }
      const writable = flags & VRING_DESC_F_WRITE ? 1 : 0;
      const n = mapDataDescriptor(this.mem, dv, at, writable, sawWritable, segs, nseg, maxSegs);
      if (n < 0) return n;
      nseg = n;
      if (writable) sawWritable = true;
      if (!(flags & VRING_DESC_F_NEXT)) return nseg;
      const next = dv.getUint16(at + 14, true);
      if (next >= tableSize) return -E.EINVAL;
      idx = next;
    }
  }

  lastChain = 0;

  /** Virtqueue: pop a head and map its chain. */
  pop(segs: Float64Array, maxSegs: number): number {
    const head = this.nextAvail();
    if (head >= 0) this.lastChain = this.mapChain(head, segs, maxSegs);
    return head;
  }

  push(head: number, lenBytes: number): void {
    this.pushUsed(head, lenBytes);
  }

  publish(): boolean {
    return this.publishUsed();
  }

  /** Fill the next used entry; it becomes visible with publishUsed(). */
  pushUsed(head: number, lenBytes: number): void {
    const slot = this.usedIdx & this.mask;
    this.usedEntries[1 + 2 * slot] = head;
    this.usedEntries[2 + 2 * slot] = lenBytes;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.inflight?.pushed(head);
  }

  /**
   * Make pushed entries visible to the driver and say whether it wants an
   * interrupt for them (EVENT_IDX: vring_need_event; else the NO_INTERRUPT flag).
   */
  publishUsed(): boolean {
    const old = this.publishedUsed;
    const now = this.usedIdx;
    if (old === now) return false;
    // Seq-cst store: entries are visible before the index, and the index before
    // we read used_event below (a full barrier on x86).
    Atomics.store(this.usedHdr, 1, now);
    this.publishedUsed = now;
    this.inflight?.published(old, now);
    if (this.eventIdx) {
      const usedEvent = Atomics.load(this.avail, 2 + this.size);
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (Atomics.load(this.avail, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Ask the driver for kicks (before sleeping) or tell it not to bother (while
   * polling). The caller must re-check availPending() after enabling: a buffer
   * added just before the driver saw the request would otherwise sleep unseen.
   */
  setKicks(enabled: boolean): void {
    if (this.eventIdx) {
      // avail_event lives after the used ring entries (§2.7.10).
      if (enabled) Atomics.store(this.usedHdr, 2 + 4 * this.size, this.lastAvail);
      return;
    }
    const f = this.usedHdr[0]!;
    Atomics.store(this.usedHdr, 0, enabled ? f & ~VRING_USED_F_NO_NOTIFY : f | VRING_USED_F_NO_NOTIFY);
  }
}
