// VDUSE IOTLB maps: the kernel hands out one fd per map (VDUSE_IOTLB_GET_FD on
// struct vduse_iotlb_entry). The control plane resolves ring addresses with it
// and each reactor resolves data buffers lazily on a miss, because the kernel
// creates maps (the bounce buffer) only after the driver is ready. Both go
// through mapIotlbEntry so the rules (per-address lookup, map from offset 0,
// protection from perm) live in one place.
import type { Mapping, NativeShim } from '../native/index.js';
import type { GuestMemory, RegionSpec } from '../virtio/memory.js';

export interface IotlbSource {
  /** the device fd and the ioctl that returns a map's fd */
  fd: number;
  request: number;
}

/** struct vduse_iotlb_entry, decoded */
export interface IotlbEntry {
  offset: bigint;
  start: bigint;
  last: bigint;
  perm: number;
}

/** enum vduse_access_perm: VDUSE_ACCESS_RO */
const ACCESS_RO = 1;

/** struct vduse_iotlb_entry (32 bytes): in = [start, last], out = the first overlapping map. */
export function iotlbBuffer(start: bigint, last: bigint): Uint8Array {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  v.setBigUint64(8, start, true);
  v.setBigUint64(16, last, true);
  return b;
}

export function decodeIotlb(b: Uint8Array): IotlbEntry {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { offset: v.getBigUint64(0, true), start: v.getBigUint64(8, true), last: v.getBigUint64(16, true), perm: b[24]! };
}

/** One mapped IOTLB entry: a guest-memory region plus the mapping that backs it. */
export interface IotlbRegion extends RegionSpec {
  readonly: boolean;
  map: Mapping;
  mapLen: number;
  entry: IotlbEntry;
}

/**
 * Map the entry the kernel gives for `iova` (asked as [iova, iova], as libvduse
 * does: entries may overlap, and stale ones can linger after a vhost-vdpa client
 * left, so only a per-address lookup lets the kernel pick). Returns undefined when
 * nothing maps `iova` or the entry is unusable.
 */
export function mapIotlbEntry(native: NativeShim, src: IotlbSource, iova: number): IotlbRegion | undefined {
  const buf = iotlbBuffer(BigInt(iova), BigInt(iova));
  const fd = native.ioctl(src.fd, src.request, buf);
  if (fd < 0) return undefined;
  try {
    const entry = decodeIotlb(buf);
    const size = entry.last - entry.start + 1n;
    if (entry.start + size > BigInt(Number.MAX_SAFE_INTEGER) || entry.offset + size > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
    // Only an entry that covers the address is progress (callers retry the lookup once).
    if (BigInt(iova) < entry.start || BigInt(iova) > entry.last) return undefined;
    const readonly = entry.perm === ACCESS_RO;
    // Map from file offset 0 like libvduse: the entry's offset need not be page-aligned.
    const mapLen = Number(entry.offset + size);
    const map = native.mmap(fd, 0, mapLen, readonly ? native.PROT_READ : native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED);
    return { gpa: Number(entry.start), uva: -1, hostAddr: map.addr + Number(entry.offset), lenBytes: Number(size), readonly, map, mapLen, entry };
  } catch {
    return undefined;
  } finally {
    native.close(fd);
  }
}

export function describeIotlb(e: IotlbEntry): Record<string, string | number> {
  return { iova: `0x${e.start.toString(16)}`, last: `0x${e.last.toString(16)}`, offset: `0x${e.offset.toString(16)}`, perm: e.perm };
}

/** A reactor's lazy view of VDUSE memory: a GuestMemory miss maps the entry covering the address. */
export class IotlbMapper {
  private readonly regions: IotlbRegion[] = [];

  constructor(
    private readonly native: NativeShim,
    private readonly src: IotlbSource,
    private readonly mem: GuestMemory,
    private readonly log: (msg: string) => void = () => {},
  ) {
    mem.onMiss = (gpa) => this.miss(gpa);
  }

  private miss(gpa: number): boolean {
    const r = mapIotlbEntry(this.native, this.src, gpa);
    if (!r) return false;
    this.log(`IOTLB miss at 0x${gpa.toString(16)}: ${JSON.stringify(describeIotlb(r.entry))}`);
    this.regions.push(r);
    this.mem.addRegion({ gpa: r.gpa, uva: -1, hostAddr: r.hostAddr, lenBytes: r.lenBytes, readonly: r.readonly });
    return true;
  }

  /** Unmap what this mapper added (the GuestMemory views over it must be detached first). */
  close(): void {
    for (const r of this.regions) this.native.munmap(r.map.buffer, r.map.addr, r.mapLen);
    this.regions.length = 0;
  }
}
