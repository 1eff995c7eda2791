// A packed-ring driver for tests over a plain buffer that stands for guest
// memory (gpa = offset): writes descriptors (hostile ones included) and reads
// used descriptors back.
import { GuestMemory } from '../../../src/virtio/memory.js';
import { PackedRing, VRING_PACKED_DESC_F_AVAIL as AVAIL, VRING_PACKED_DESC_F_USED as USED } from '../../../src/virtio/packed-ring.js';
import type { PackedInflight } from '../../../src/virtio/inflight-packed.js';

export const MEM = 1 << 20;
export const DRIVER = 0x8000;
export const DEVICE = 0x8004;

export class PackedDriver {
  readonly buf = new ArrayBuffer(MEM);
  readonly dv = new DataView(this.buf);
  readonly mem = new GuestMemory([{ gpa: 0, uva: -1, hostAddr: 0x10_0000_0000, lenBytes: MEM }], () => this.buf);
  pos = 0;
  wrap = 1;
  constructor(readonly size: number) {}
  ring(eventIdx = false, avail = 1 << 15, used = 1 << 15, tracking?: { inflight: PackedInflight; resubmit: readonly number[] }) {
    return new PackedRing(this.mem, { size: this.size, desc: { window: 0, offset: 0 }, driver: { window: 0, offset: DRIVER }, device: { window: 0, offset: DEVICE } }, eventIdx, true, avail, used, tracking);
  }
  write(pos: number, addr: number, len: number, id: number, flags: number) {
    const at = pos * 16;
    this.dv.setUint32(at, addr, true);
    this.dv.setUint32(at + 4, 0, true);
    this.dv.setUint32(at + 8, len, true);
    this.dv.setUint16(at + 12, id, true);
    this.dv.setUint16(at + 14, flags, true);
  }
  /** Make a chain available: descriptors [addr, len, flags] with the buffer id in the last. */
  add(id: number, chain: [number, number, number][]) {
    chain.forEach(([addr, len, flags], i) => {
      const wrapFlags = this.wrap ? AVAIL : USED;
      this.write(this.pos, addr, len, i === chain.length - 1 ? id : 0xffff, flags | wrapFlags);
      this.pos++;
      if (this.pos === this.size) {
        this.pos = 0;
        this.wrap ^= 1;
      }
    });
  }
  used(pos: number) {
    const at = pos * 16;
    return { id: this.dv.getUint16(at + 12, true), len: this.dv.getUint32(at + 8, true), flags: this.dv.getUint16(at + 14, true) };
  }
}

