// A virtio driver for tests: lays out a split ring in a plain ArrayBuffer that
// stands for guest memory (gpa 0 = byte 0), builds descriptor chains, and reads
// the used ring back. Deliberately able to write anything, hostile included.
import { GuestMemory } from '../../../src/virtio/memory.js';
import { SplitRing, type SplitRingLayout } from '../../../src/virtio/split-ring.js';
import { VRING_DESC_F_NEXT } from '../../../src/virtio/constants.js';

export interface Desc {
  addr: number;
  len: number;
  flags: number;
  next?: number;
}

export const d = (addr: number, len: number, flags = 0, next?: number): Desc => ({ addr, len, flags, next });

export class TestDriver {
  readonly dv: DataView;
  readonly u8: Uint8Array;
  readonly layout: SplitRingLayout;
  readonly mem: GuestMemory;
  availIdx = 0;
  /** data area allocator (bump) */
  private brk: number;

  constructor(
    readonly size = 16,
    readonly memBytes = 1 << 20,
    /** the host address the buffer stands for (tests with real bdevs pass a real mapping) */
    hostAddr = 0x10_0000_0000,
    buffer?: ArrayBuffer,
  ) {
    const buf = buffer ?? new ArrayBuffer(memBytes);
    this.dv = new DataView(buf);
    this.u8 = new Uint8Array(buf);
    const availOff = 16 * size;
    const usedOff = Math.ceil((availOff + 6 + 2 * size) / 4096) * 4096;
    this.layout = { size, desc: { window: 0, offset: 0 }, avail: { window: 0, offset: availOff }, used: { window: 0, offset: usedOff } };
    this.brk = Math.ceil((usedOff + 6 + 8 * size) / 4096) * 4096;
    this.mem = new GuestMemory([{ gpa: 0, uva: 0x7f00_0000_0000, hostAddr, lenBytes: memBytes }], () => buf);
  }

  ring(eventIdx = false, indirect = true, base = 0): SplitRing {
    return new SplitRing(this.mem, this.layout, eventIdx, indirect, base);
  }

  alloc(len: number, align = 16): number {
    this.brk = Math.ceil(this.brk / align) * align;
    const at = this.brk;
    this.brk += len;
    if (this.brk > this.memBytes) throw new Error('test memory exhausted');
    return at;
  }

  writeDesc(tableAddr: number, i: number, x: Desc): void {
    const at = tableAddr + 16 * i;
    this.dv.setUint32(at, x.addr % 2 ** 32, true);
    this.dv.setUint32(at + 4, Math.floor(x.addr / 2 ** 32), true);
    this.dv.setUint32(at + 8, x.len, true);
    this.dv.setUint16(at + 12, x.flags, true);
    this.dv.setUint16(at + 14, x.next ?? 0, true);
  }

  /** Write a chain into the main table starting at `head`, linking entries head, head+1, ... unless `next` is given. */
  putChain(head: number, chain: Desc[]): number {
    chain.forEach((x, i) => {
      const next = x.next ?? (x.flags & VRING_DESC_F_NEXT ? (head + i + 1) % this.size : 0);
      this.writeDesc(0, (head + i) % this.size, { ...x, next });
    });
    return head;
  }

  /** Write an indirect table at a fresh address, returning it. */
  putTable(chain: Desc[]): number {
    const at = this.alloc(16 * chain.length);
    chain.forEach((x, i) => this.writeDesc(at, i, { ...x, next: x.next ?? i + 1 }));
    return at;
  }

  makeAvail(...heads: number[]): void {
    const a = this.layout.avail.offset;
    for (const h of heads) {
      this.dv.setUint16(a + 4 + 2 * (this.availIdx % this.size), h, true);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    this.dv.setUint16(a + 2, this.availIdx, true);
  }

  setAvailIdx(idx: number): void {
    this.dv.setUint16(this.layout.avail.offset + 2, idx, true);
  }

  setAvailFlags(f: number): void {
    this.dv.setUint16(this.layout.avail.offset, f, true);
  }

  setUsedEvent(v: number): void {
    this.dv.setUint16(this.layout.avail.offset + 4 + 2 * this.size, v, true);
  }

  usedIdx(): number {
    return this.dv.getUint16(this.layout.used.offset + 2, true);
  }

  usedFlags(): number {
    return this.dv.getUint16(this.layout.used.offset, true);
  }

  availEvent(): number {
    return this.dv.getUint16(this.layout.used.offset + 4 + 8 * this.size, true);
  }

  usedEntry(i: number): { id: number; len: number } {
    const at = this.layout.used.offset + 4 + 8 * (i % this.size);
    return { id: this.dv.getUint32(at, true), len: this.dv.getUint32(at + 4, true) };
  }
}
