// What one descriptor may say, whichever ring carries it (virtio 1.2 §2.7.5,
// §2.7.4.2, §2.8.8): the 16-byte layout {addr u64, len u32, ...}, the rules for
// data buffers and for indirect tables. The split and packed rings differ in how
// they chain descriptors; each step of either walk goes through these checks.
import { E } from './errno.js';
import type { GuestMemory } from './memory.js';

export const DESC_SIZE = 16;
/**
 * Largest indirect table we follow. Linux sizes indirect tables by seg_max, not
 * by the queue size, so a 128-entry queue may carry a 256-entry table; loops are
 * still caught by counting steps against the table size.
 */
export const MAX_INDIRECT = 1024;

/**
 * Put the descriptor's address into mem.gpaArg (see there why not a return
 * value); false at or above 2^53, where no mapping lives, so it is simply unmapped.
 */
function loadDescAddr(mem: GuestMemory, dv: DataView, at: number): boolean {
  const hi = dv.getUint32(at + 4, true);
  if (hi >= 0x20_0000) return false;
  mem.gpaArg[0] = hi * 0x1_0000_0000 + dv.getUint32(at, true);
  return true;
}

/**
 * Append the data buffer of the descriptor at `at` to `segs` (at segment `nseg`).
 * `sawWritable` says whether an earlier descriptor of the chain was device-writable:
 * device-readable ones must all come first. Returns the new segment count or -errno.
 */
export function mapDataDescriptor(
  mem: GuestMemory,
  dv: DataView,
  at: number,
  writable: number,
  sawWritable: boolean,
  segs: Float64Array,
  nseg: number,
  maxSegs: number,
): number {
  if (!loadDescAddr(mem, dv, at)) return -E.EFAULT;
  const len = dv.getUint32(at + 8, true);
  if (len === 0) return -E.EINVAL;
  if (!writable && sawWritable) return -E.EINVAL;
  return mem.mapArg(len, writable, segs, nseg, maxSegs);
}

/** Where an indirect table lives; filled by findIndirectTable (one per ring, reused). */
export interface IndirectTable {
  window: number;
  offset: number;
  entries: number;
}

/**
 * Locate the indirect table the descriptor at `at` points to, into `out`.
 * The table must be whole descriptors, at most MAX_INDIRECT, inside one
 * GuestMemory window. Returns 0 or -errno.
 */
export function findIndirectTable(mem: GuestMemory, dv: DataView, at: number, out: IndirectTable): number {
  if (!loadDescAddr(mem, dv, at)) return -E.EFAULT;
  const len = dv.getUint32(at + 8, true);
  if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > MAX_INDIRECT) return -E.EINVAL;
  const wi = mem.findArg();
  if (wi < 0) return -E.EFAULT;
  const w = mem.windows[wi]!;
  const addr = mem.gpaArg[0]!;
  if (addr + len > w.gpa + w.lenBytes) return -E.EFAULT;
  out.window = wi;
  out.offset = addr - w.gpa;
  out.entries = len / DESC_SIZE;
  return 0;
}
