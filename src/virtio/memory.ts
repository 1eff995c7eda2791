// Guest memory as this process sees it: regions the frontend mapped, cut into
// windows small enough for one TypedArray each (regions can exceed what one
// ArrayBuffer view addresses). Pure: no native import; the frontend or reactor
// hands in the ArrayBuffers.
import { E } from './errno.js';

/** Largest window: 1 GiB keeps every view well inside V8's TypedArray limits. */
export const WINDOW_BYTES = 1 << 30;

export interface RegionSpec {
  /** guest physical address (or IOVA) of the region's first byte */
  gpa: number;
  /** frontend (QEMU) virtual address of the first byte; -1 if not applicable */
  uva: number;
  /** host virtual address in this process */
  hostAddr: number;
  lenBytes: number;
  /** mapped without write permission (VDUSE IOTLB read-only maps): never a device-writable buffer */
  readonly?: boolean;
}

export interface MemWindow {
  readonly gpa: number;
  readonly uva: number;
  readonly hostAddr: number;
  readonly lenBytes: number;
  readonly readonly: boolean;
  readonly u8: Uint8Array;
  readonly dv: DataView;
  readonly buffer: ArrayBuffer;
}

/** A segment is 4 numbers in a Float64Array: window index, offset in window, length, writable (0/1). */
export const SEG_STRIDE = 4;

export class GuestMemory {
  readonly windows: MemWindow[] = [];
  private lastHit = 0;
  /**
   * Called when an address is not mapped; it may add the region holding it
   * (addRegion) and return true to have the lookup retried once. VDUSE uses it:
   * the kernel creates IOTLB maps (the bounce buffer) after the driver is ready.
   */
  onMiss: ((gpa: number) => boolean) | undefined;

  /**
   * @param regions validated, non-overlapping regions
   * @param view returns an ArrayBuffer spanning [hostAddr, hostAddr+len)
   */
  constructor(
    regions: readonly RegionSpec[],
    private readonly view: (hostAddr: number, lenBytes: number) => ArrayBuffer,
  ) {
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (const r of sorted) this.addRegion(r);
  }

  /** Add a region (not overlapping any present); existing window indices stay valid. */
  addRegion(r: RegionSpec): void {
    for (let off = 0; off < r.lenBytes; off += WINDOW_BYTES) {
      const len = Math.min(WINDOW_BYTES, r.lenBytes - off);
      const buffer = this.view(r.hostAddr + off, len);
      this.windows.push({
        gpa: r.gpa + off,
        uva: r.uva < 0 ? -1 : r.uva + off,
        hostAddr: r.hostAddr + off,
        lenBytes: len,
        readonly: r.readonly === true,
        u8: new Uint8Array(buffer),
        dv: new DataView(buffer),
        buffer,
      });
    }
  }

  /** Index of the window holding guest address `gpa`, or -1. */
  findGpa(gpa: number): number {
    this.gpaArg[0] = gpa;
    return this.findArg();
  }

  /**
   * Guest addresses are above 2^31 (a vhost-user front-end's virtual addresses),
   * so as call arguments V8 boxes them in a new HeapNumber whenever it does not
   * inline the callee, and whether it inlines depends on the order of
   * compilation: from one start to the next the same build allocated nothing or
   * 16 bytes per descriptor (a scavenge every ~11 ms at 1.8 M IOPS, in 2 of 6
   * starts). The hot path therefore passes the address in this Float64Array
   * slot, which stays unboxed, and takes only small integers as arguments.
   */
  readonly gpaArg = new Float64Array(1);

  /** findGpa for the address in gpaArg[0]. */
  findArg(): number {
    const gpa = this.gpaArg[0]!;
    const ws = this.windows;
    const h = ws[this.lastHit];
    if (h !== undefined && gpa >= h.gpa && gpa < h.gpa + h.lenBytes) return this.lastHit;
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i]!;
      if (gpa >= w.gpa && gpa < w.gpa + w.lenBytes) {
        this.lastHit = i;
        return i;
      }
    }
    return this.miss();
  }

  /** Not mapped: ask onMiss (which may add the region) and look once more. Rare. */
  private miss(): number {
    const gpa = this.gpaArg[0]!;
    if (this.onMiss === undefined || !this.onMiss(gpa)) return -1;
    const ws = this.windows;
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i]!;
      if (gpa >= w.gpa && gpa < w.gpa + w.lenBytes) {
        this.lastHit = i;
        return i;
      }
    }
    return -1;
  }

  /**
   * Append the segments covering guest range [gpa, gpa+len) to `out` at segment
   * index `at`; a range crossing windows (or adjacent regions) yields several.
   * Returns the new segment count, -EFAULT if any byte is unmapped, or -E2BIG
   * if more than `maxSegs` segments would be needed.
   */
  mapGpa(gpa: number, len: number, writable: number, out: Float64Array, at: number, maxSegs: number): number {
    this.gpaArg[0] = gpa;
    return this.mapArg(len, writable, out, at, maxSegs);
  }

  /** mapGpa for the address in gpaArg[0] (the hot path's form; see gpaArg). */
  mapArg(len: number, writable: number, out: Float64Array, at: number, maxSegs: number): number {
    let n = at;
    while (len > 0) {
      const wi = this.findArg();
      if (wi < 0) return -E.EFAULT;
      if (n >= maxSegs) return -E.E2BIG;
      const w = this.windows[wi]!;
      // Writing into a read-only mapping would fault the whole process.
      if (writable && w.readonly) return -E.EFAULT;
      const gpa = this.gpaArg[0]!;
      const off = gpa - w.gpa;
      const take = Math.min(len, w.lenBytes - off);
      const o = n * SEG_STRIDE;
      out[o] = wi;
      out[o + 1] = off;
      out[o + 2] = take;
      out[o + 3] = writable;
      n++;
      this.gpaArg[0] = gpa + take;
      len -= take;
    }
    return n;
  }

  /** The window and offset of a contiguous range given by frontend virtual address, or undefined. */
  findUva(uva: number, len: number): { window: number; offset: number } | undefined {
    for (let i = 0; i < this.windows.length; i++) {
      const w = this.windows[i]!;
      if (w.uva >= 0 && uva >= w.uva && uva + len <= w.uva + w.lenBytes) return { window: i, offset: uva - w.uva };
    }
    return undefined;
  }

  /** The window and offset of a contiguous range given by host address in this process, or undefined. */
  findHost(hostAddr: number, len: number): { window: number; offset: number } | undefined {
    for (let i = 0; i < this.windows.length; i++) {
      const w = this.windows[i]!;
      if (hostAddr >= w.hostAddr && hostAddr + len <= w.hostAddr + w.lenBytes) return { window: i, offset: hostAddr - w.hostAddr };
    }
    return undefined;
  }

  /** As findUva, by guest physical address (rings given as IOVAs). */
  findGpaRange(gpa: number, len: number): { window: number; offset: number } | undefined {
    const i = this.findGpa(gpa);
    if (i < 0) return undefined;
    const w = this.windows[i]!;
    return gpa + len <= w.gpa + w.lenBytes ? { window: i, offset: gpa - w.gpa } : undefined;
  }
}
