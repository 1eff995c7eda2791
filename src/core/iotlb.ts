// Lazy IOTLB mapping for a reactor's view of VDUSE memory: the kernel creates
// maps (the bounce buffer) after the driver is ready, so a miss asks the device
// fd for the map covering the address (VDUSE_IOTLB_GET_FD, struct
// vduse_iotlb_entry) and maps it here. Misses are rare; the hot path only pays
// when one happens.
import type { Mapping, NativeShim } from '../native/index.js';
import type { GuestMemory } from '../virtio/memory.js';

export interface IotlbSource {
  /** the device fd and the ioctl that returns a map's fd */
  fd: number;
  request: number;
}

const ACCESS_RO = 1;

export class IotlbMapper {
  private readonly maps: { map: Mapping; len: number }[] = [];
  private readonly entry = new Uint8Array(32);
  private readonly dv = new DataView(this.entry.buffer);

  constructor(
    private readonly native: NativeShim,
    private readonly src: IotlbSource,
    private readonly mem: GuestMemory,
    private readonly log: (msg: string) => void = () => {},
  ) {
    mem.onMiss = (gpa) => this.miss(gpa);
  }

  private miss(gpa: number): boolean {
    const n = this.native;
    this.entry.fill(0);
    this.dv.setBigUint64(8, BigInt(gpa), true); // start
    this.dv.setBigUint64(16, BigInt(gpa), true); // last
    const fd = n.ioctl(this.src.fd, this.src.request, this.entry);
    if (fd < 0) return false;
    try {
      const offset = this.dv.getBigUint64(0, true);
      const start = this.dv.getBigUint64(8, true);
      const last = this.dv.getBigUint64(16, true);
      const readonly = this.entry[24] === ACCESS_RO;
      const size = last - start + 1n;
      this.log(`IOTLB miss at 0x${gpa.toString(16)}: map [0x${start.toString(16)}, 0x${last.toString(16)}] offset 0x${offset.toString(16)} perm ${this.entry[24]}`);
      if (start + size > BigInt(Number.MAX_SAFE_INTEGER) || offset + size > BigInt(Number.MAX_SAFE_INTEGER)) return false;
      // Only an entry that covers the address is progress (a lookup retries once).
      if (BigInt(gpa) < start || BigInt(gpa) > last) return false;
      const len = Number(offset + size);
      const map = n.mmap(fd, 0, len, readonly ? n.PROT_READ : n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED);
      this.maps.push({ map, len });
      this.mem.addRegion({ gpa: Number(start), uva: -1, hostAddr: map.addr + Number(offset), lenBytes: Number(size), readonly });
      return true;
    } catch {
      return false;
    } finally {
      n.close(fd);
    }
  }

  /** Unmap what this mapper added (the GuestMemory views over it must be detached first). */
  close(): void {
    for (const m of this.maps) this.native.munmap(m.map.buffer, m.map.addr, m.len);
    this.maps.length = 0;
  }
}
