// Packed virtqueue, device side (virtio 1.2 §2.8). One descriptor ring shared
// by both sides; availability and use are told by the AVAIL/USED flag bits
// against each side's wrap counter. Same hostile-input rules as the split ring:
// a bad chain fails its request, a bad ring breaks the queue.
import { E } from './errno.js';
import { DESC_SIZE, findIndirectTable, mapDataDescriptor, type IndirectTable } from './descriptor.js';
import type { GuestMemory } from './memory.js';
import { BROKEN, NO_HEAD } from './split-ring.js';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from './constants.js';
import type { PackedInflight } from './inflight-packed.js';

export const VRING_PACKED_DESC_F_AVAIL = 1 << 7;
export const VRING_PACKED_DESC_F_USED = 1 << 15;
export const VRING_PACKED_EVENT_FLAG_ENABLE = 0;
export const VRING_PACKED_EVENT_FLAG_DISABLE = 1;
export const VRING_PACKED_EVENT_FLAG_DESC = 2;
const WRAP_BIT = 1 << 15;

export interface PackedRingLayout {
  size: number;
  desc: { window: number; offset: number };
  /** driver event suppression area (the driver writes it) */
  driver: { window: number; offset: number };
  /** device event suppression area (we write it) */
  device: { window: number; offset: number };
}

export function checkPackedLayout(mem: GuestMemory, l: PackedRingLayout): string | undefined {
  if (!Number.isInteger(l.size) || l.size < 1 || l.size > 32768) return `queue size ${l.size} is not in 1..32768`;
  const parts: [string, { window: number; offset: number }, number, number][] = [
    ['descriptor ring', l.desc, DESC_SIZE * l.size, 16],
    ['driver area', l.driver, 4, 4],
    ['device area', l.device, 4, 4],
  ];
  for (const [name, at, len, align] of parts) {
    const w = mem.windows[at.window];
    if (!w || at.offset < 0 || at.offset + len > w.lenBytes) return `${name} is outside guest memory`;
    if ((w.hostAddr + at.offset) % align !== 0) return `${name} is not ${align}-byte aligned`;
    if (name !== 'driver area' && w.readonly) return `${name} is in read-only memory`;
  }
  return undefined;
}

export class PackedRing {
  readonly size: number;
  private readonly dv: DataView;
  private readonly base: number;
  private readonly ring16: Uint16Array;
  private readonly ring32: Uint32Array;
  private readonly driverArea: Uint16Array;
  private readonly deviceArea: Uint16Array;
  /** next descriptor position we read, and the wrap counter it must carry */
  private availPos: number;
  private availWrap: number;
  /** next position we write a used descriptor at, and our wrap counter */
  private usedPos: number;
  private usedWrap: number;
  /** where the last interrupt decision left off (for EVENT_IDX) */
  private signalledPos: number;
  private signalledValid = false;
  /** descriptors each in-flight buffer id took in the ring (its used entry advances by that) */
  private readonly descCount: Uint16Array;
  /** how the last pop() went: segment count or -errno */
  lastChain = 0;
  broken: string | undefined;
  private readonly table: IndirectTable = { window: 0, offset: 0, entries: 0 };
  /** the in-flight region (vhost-user INFLIGHT_SHMFD), kept on every fetch and completion */
  private readonly inflight: PackedInflight | undefined;
  /** chains a previous daemon left in flight (first region entries), served before the ring */
  private readonly resubmit: Uint16Array;
  private resubmitAt = 0;
  /** a stored descriptor, in the ring's layout, for mapping a resubmitted chain */
  private readonly stored = new DataView(new ArrayBuffer(DESC_SIZE));

  constructor(
    private readonly mem: GuestMemory,
    layout: PackedRingLayout,
    readonly eventIdx: boolean,
    readonly indirect: boolean,
    /** vhost-user packed state: bits 0-14 next avail, bit 15 its wrap counter */
    availState = WRAP_BIT,
    /** bits 0-14 next used, bit 15 its wrap counter */
    usedState = WRAP_BIT,
    tracking?: { inflight: PackedInflight; resubmit: readonly number[] },
  ) {
    const bad = checkPackedLayout(mem, layout);
    if (bad) throw new RangeError(bad);
    this.size = layout.size;
    const w = mem.windows[layout.desc.window]!;
    this.dv = w.dv;
    this.base = layout.desc.offset;
    this.ring16 = new Uint16Array(w.buffer, layout.desc.offset, 8 * layout.size);
    this.ring32 = new Uint32Array(w.buffer, layout.desc.offset, 4 * layout.size);
    const dw = mem.windows[layout.driver.window]!;
    this.driverArea = new Uint16Array(dw.buffer, layout.driver.offset, 2);
    const vw = mem.windows[layout.device.window]!;
    this.deviceArea = new Uint16Array(vw.buffer, layout.device.offset, 2);
    this.availPos = (availState & 0x7fff) % this.size;
    this.availWrap = availState & WRAP_BIT ? 1 : 0;
    this.usedPos = (usedState & 0x7fff) % this.size;
    this.usedWrap = usedState & WRAP_BIT ? 1 : 0;
    this.signalledPos = this.usedPos;
    this.descCount = new Uint16Array(layout.size);
    this.inflight = tracking?.inflight;
    this.resubmit = Uint16Array.from(tracking?.resubmit ?? []);
  }

  /** vhost-user GET_VRING_BASE halves: next avail | wrap << 15, next used | wrap << 15. */
  get lastAvail(): number {
    return this.availPos | (this.availWrap ? WRAP_BIT : 0);
  }
  get usedIdx(): number {
    return this.usedPos | (this.usedWrap ? WRAP_BIT : 0);
  }

  /** The flags word of descriptor `pos`, read with acquire semantics (it publishes the rest). */
  private flagsAt(pos: number): number {
    return Atomics.load(this.ring16, pos * 8 + 7);
  }

  availPending(): boolean {
    if (this.resubmitAt < this.resubmit.length) return true;
    const f = this.flagsAt(this.availPos);
    return ((f & VRING_PACKED_DESC_F_AVAIL) !== 0) === (this.availWrap === 1) && ((f & VRING_PACKED_DESC_F_USED) !== 0) !== (this.availWrap === 1);
  }

  /**
   * Take the next available buffer: returns its buffer id, NO_HEAD or BROKEN;
   * its segments go to `segs` and lastChain says how mapping went (count or -errno).
   */
  pop(segs: Float64Array, maxSegs: number): number {
    if (this.broken !== undefined) return BROKEN;
    // Inherited chains keep their fetch stamps: their order survives another crash.
    if (this.resubmitAt < this.resubmit.length) return this.popStored(this.resubmit[this.resubmitAt++]!, segs, maxSegs);
    if (!this.availPending()) return NO_HEAD;
    const t = this.inflight;
    const size = this.size;
    let pos = this.availPos;
    let wrap = this.availWrap;
    let count = 0;
    let nseg = 0;
    let err = 0;
    let sawWritable = false;
    let id = 0;
    for (;;) {
      if (++count > size) return this.breakChain(`a descriptor chain runs longer than the ring (${size})`);
      const at = this.base + pos * DESC_SIZE;
      const flags = this.dv.getUint16(at + 14, true);
      // Every descriptor of a chain must be available in this lap.
      if (count > 1 && ((flags & VRING_PACKED_DESC_F_AVAIL) !== 0) !== (wrap === 1)) return this.breakChain(`descriptor ${pos} of a chain is not available`);
      if (t !== undefined && !t.copy(this.ring32, pos)) return this.breakChain('more descriptors in flight than the ring holds');
      id = this.dv.getUint16(at + 12, true);
      if (err === 0) err = this.mapOne(this.dv, at, flags, segs, nseg, maxSegs, sawWritable);
      if (err > 0) {
        nseg = err;
        err = 0;
        if (flags & VRING_DESC_F_WRITE) sawWritable = true;
      }
      pos++;
      if (pos === size) {
        pos = 0;
        wrap ^= 1;
      }
      if (!(flags & VRING_DESC_F_NEXT)) break;
    }
    if (id >= size) return this.breakChain(`buffer id ${id} is beyond the ring size ${size}`);
    if (t !== undefined && !t.commit(id)) {
      this.broken = `buffer id ${id} was made available again while in flight`;
      return BROKEN;
    }
    this.availPos = pos;
    this.availWrap = wrap;
    this.descCount[id] = count;
    this.lastChain = err < 0 ? err : nseg;
    return id;
  }

  private breakChain(why: string): number {
    this.inflight?.abort();
    this.broken = why;
    return BROKEN;
  }

  /**
   * A chain a previous daemon left in flight, mapped from its copy in the
   * region (its ring slots may hold used descriptors by now). recoverPacked
   * checked its shape; its buffers are checked here like any other.
   */
  private popStored(head: number, segs: Float64Array, maxSegs: number): number {
    const t = this.inflight!;
    const d = this.stored;
    let e = head;
    let nseg = 0;
    let err = 0;
    let sawWritable = false;
    const num = t.num(head);
    for (let k = 0; k < num; k++) {
      e = t.stored(e, d);
      const flags = d.getUint16(14, true);
      if (err === 0) err = this.mapOne(d, 0, flags, segs, nseg, maxSegs, sawWritable);
      if (err > 0) {
        nseg = err;
        err = 0;
        if (flags & VRING_DESC_F_WRITE) sawWritable = true;
      }
    }
    const id = t.chainId(head);
    if (id >= this.size) return this.breakChain(`an inherited chain carries buffer id ${id} on a ring of ${this.size}`);
    this.descCount[id] = num;
    this.lastChain = err < 0 ? err : nseg;
    return id;
  }

  /** Map one descriptor (or the indirect table it points to) at `at` in `dv`; returns the new segment count or -errno. */
  private mapOne(dv: DataView, at: number, flags: number, segs: Float64Array, nseg: number, maxSegs: number, sawWritable: boolean): number {
    if (!(flags & VRING_DESC_F_INDIRECT)) {
      return mapDataDescriptor(this.mem, dv, at, flags & VRING_DESC_F_WRITE ? 1 : 0, sawWritable, segs, nseg, maxSegs);
    }
    if (!this.indirect || flags & VRING_DESC_F_NEXT) return -E.EINVAL;
    const t = this.table;
    const rc = findIndirectTable(this.mem, dv, at, t);
    if (rc < 0) return rc;
    const tv = this.mem.windows[t.window]!.dv;
    // An indirect table is a plain array, walked in order (§2.8.8): no NEXT, no nesting.
    let n = nseg;
    let writableSeen = sawWritable;
    for (let i = 0; i < t.entries; i++) {
      const o = t.offset + i * DESC_SIZE;
      const f = tv.getUint16(o + 14, true);
      if (f & VRING_DESC_F_INDIRECT) return -E.EINVAL;
      const w = f & VRING_DESC_F_WRITE ? 1 : 0;
      n = mapDataDescriptor(this.mem, tv, o, w, writableSeen, segs, n, maxSegs);
      if (n < 0) return n;
      if (w) writableSeen = true;
    }
    return n;
  }

  /** Write the used descriptor for buffer `id` (visible at once: the flags store publishes it). */
  push(id: number, lenBytes: number): void {
    let next = this.usedPos + (this.descCount[id] || 1);
    let nextWrap = this.usedWrap;
    if (next >= this.size) {
      next -= this.size;
      nextWrap ^= 1;
    }
    this.inflight?.completing(id, next, nextWrap);
    const at = this.base + this.usedPos * DESC_SIZE;
    this.dv.setUint16(at + 12, id, true);
    this.dv.setUint32(at + 8, lenBytes, true);
    const f = this.usedWrap ? VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED : 0;
    // id and len before flags: the driver trusts them once it sees the flags.
    Atomics.store(this.ring16, this.usedPos * 8 + 7, f);
    this.inflight?.completed(id);
    this.usedPos = next;
    this.usedWrap = nextWrap;
  }

  /** Does the driver want an interrupt for what was pushed since the last call? */
  publish(): boolean {
    const now = this.usedPos;
    if (now === this.signalledPos && this.signalledValid) return false;
    let old = this.signalledPos;
    const valid = this.signalledValid;
    this.signalledPos = now;
    this.signalledValid = true;
    const flags = Atomics.load(this.driverArea, 1);
    if (!this.eventIdx || flags !== VRING_PACKED_EVENT_FLAG_DESC) return flags !== VRING_PACKED_EVENT_FLAG_DISABLE;
    if (!valid) return true;
    const offWrap = Atomics.load(this.driverArea, 0);
    let off = offWrap & 0x7fff;
    if (now <= old) old -= this.size;
    if (offWrap >> 15 !== this.usedWrap) off -= this.size;
    return ((now - off - 1) & 0xffff) < ((now - old) & 0xffff);
  }

  /** Ask for kicks (before sleeping; re-check availPending after) or tell the driver not to bother. */
  setKicks(enabled: boolean): void {
    if (enabled && this.eventIdx) {
      Atomics.store(this.deviceArea, 0, this.availPos | (this.availWrap ? WRAP_BIT : 0));
      Atomics.store(this.deviceArea, 1, VRING_PACKED_EVENT_FLAG_DESC);
      return;
    }
    Atomics.store(this.deviceArea, 1, enabled ? VRING_PACKED_EVENT_FLAG_ENABLE : VRING_PACKED_EVENT_FLAG_DISABLE);
  }
}
