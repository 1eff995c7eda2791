// What a VDUSE device's daemon must remember across its own death. Linux 6.12
// keeps the device, its config space and its bounce pages when the daemon
// dies, but not the driver status (no ioctl returns it) nor the rings'
// progress, so vdx keeps both itself, per device, in the state directory:
//
//   vduse-NAME.json  how vdx created the device: compared on a re-attach, so a
//                    device of another shape is refused, and a device with no
//                    such file (someone else's) is never touched. 0600, written
//                    by rename, so a kill leaves the old one or the new one.
//   vduse-NAME.log   mapped shared: the driver status vdx last acknowledged and
//                    one in-flight region per queue (split or packed layout,
//                    virtio/inflight*.ts), written on the reactors' hot path.
//                    The page cache keeps what a killed process wrote.
//
// Log layout: 0 magic "VDXVDLOG", 8 u32 version, 12 u32 queues, 16 u32 queue
// size (descriptors per region), 20 u32 status; regions from 64, each
// max(split, packed stride) bytes. A log or record that does not add up
// refuses the re-attach with what is wrong; the device is left as it was.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, constants as FS } from 'node:fs';
import { join } from 'node:path';
import type { Mapping, NativeShim } from '../../native/index.js';
import { inflightSplitStride } from '../../virtio/inflight.js';
import { inflightPackedStride } from '../../virtio/inflight-packed.js';

const MAGIC = 'VDXVDLOG';
const LOG_VERSION = 1;
const LOG_HDR = 64;
const RECORD_VERSION = 1;

/** How vdx created a device: what must match for a re-attach. */
export interface VduseRecord {
  name: string;
  /** features offered (hex) */
  features: string;
  numQueues: number;
  queueSize: number;
  /** the virtio-blk config space (hex) */
  config: string;
  /** the vdx process serving it (not compared: a later vdx is another process) */
  pid?: number;
}

/** Is process `pid` (another one) alive? A dead vdx's device may be taken back; a live one's never. */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Write `text` to `path` in `dir` (made 0700 if missing), mode 0600, by rename: a kill leaves the old file or the new one. */
export function writePrivateFile(dir: string, path: string, text: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
}

function regionStride(queueSize: number): number {
  return Math.max(inflightSplitStride(queueSize), inflightPackedStride(queueSize));
}

/**
 * Why `saved` and `now` are not the same device, in words; undefined when
 * they are. `ignoreCapacity`: a capacity change alone is a resize, not
 * another device.
 */
export function recordDifference(saved: VduseRecord, now: VduseRecord, o: { ignoreCapacity?: boolean } = {}): string | undefined {
  if (saved.numQueues !== now.numQueues) return `it has ${saved.numQueues} queues, the export asks for ${now.numQueues} (num-queues=)`;
  if (saved.queueSize !== now.queueSize) return `its queues hold ${saved.queueSize} descriptors, the export asks for ${now.queueSize} (queue-size=)`;
  if (saved.features !== now.features) return `it offers features 0x${saved.features}, the export would offer 0x${now.features}`;
  if (saved.config !== now.config) {
    const a = Buffer.from(saved.config, 'hex');
    const b = Buffer.from(now.config, 'hex');
    if (o.ignoreCapacity && a.length >= 8 && b.length >= 8) {
      a.fill(0, 0, 8);
      b.fill(0, 0, 8);
      if (a.equals(b)) return undefined;
    }
    const cap = (x: Buffer) => (x.length >= 8 ? x.readUInt32LE(0) + x.readUInt32LE(4) * 2 ** 32 : -1);
    if (cap(a) !== cap(b)) return `its capacity is ${cap(a)} sectors, the bdev has ${cap(b)}`;
    if (a.length >= 24 && b.length >= 24 && a.readUInt32LE(20) !== b.readUInt32LE(20)) return `its block size is ${a.readUInt32LE(20)}, the export's ${b.readUInt32LE(20)}`;
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    return `its virtio-blk config differs from the export's at byte ${i}`;
  }
  return undefined;
}

export class VduseState {
  readonly recordPath: string;
  readonly logPath: string;
  private log: { map: Mapping; len: number; u32: Uint32Array } | undefined;

  constructor(
    private readonly native: NativeShim,
    readonly dir: string,
    readonly name: string,
  ) {
    this.recordPath = join(dir, `vduse-${name}.json`);
    this.logPath = join(dir, `vduse-${name}.log`);
  }

  /** The record of a device vdx created, or undefined if there is none; throws for one that cannot be read. */
  readRecord(): VduseRecord | undefined {
    if (!existsSync(this.recordPath)) return undefined;
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(this.recordPath, 'utf8'));
    } catch (e) {
      throw new Error(`${this.recordPath} is not vdx's device record (${(e as Error).message})`);
    }
    const r = doc as Partial<VduseRecord> & { vdx?: unknown };
    if (
      typeof r !== 'object' || r === null || r.vdx !== RECORD_VERSION || r.name !== this.name ||
      typeof r.features !== 'string' || !/^[0-9a-f]+$/.test(r.features) ||
      !Number.isInteger(r.numQueues) || !Number.isInteger(r.queueSize) ||
      typeof r.config !== 'string' || !/^([0-9a-f]{2})+$/.test(r.config)
    ) {
      throw new Error(`${this.recordPath} is not a version ${RECORD_VERSION} record of VDUSE device '${this.name}'`);
    }
    return { name: r.name, features: r.features, numQueues: r.numQueues!, queueSize: r.queueSize!, config: r.config, ...(Number.isInteger(r.pid) && r.pid! > 0 ? { pid: r.pid } : {}) };
  }

  writeRecord(r: VduseRecord): void {
    writePrivateFile(this.dir, this.recordPath, `${JSON.stringify({ vdx: RECORD_VERSION, ...r })}\n`);
  }

  /** A fresh, zeroed log for a device just created. */
  createLog(numQueues: number, queueSize: number): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    rmSync(this.logPath, { force: true });
    const len = LOG_HDR + numQueues * regionStride(queueSize);
    const fd = openSync(this.logPath, FS.O_RDWR | FS.O_CREAT | FS.O_EXCL, 0o600);
    try {
      this.native.ftruncate(fd, len);
      this.mapLog(fd, len);
    } finally {
      closeSync(fd);
    }
    const v = new DataView(this.log!.map.buffer);
    Buffer.from(this.log!.map.buffer).write(MAGIC, 0, 'latin1');
    v.setUint32(8, LOG_VERSION, true);
    v.setUint32(12, numQueues, true);
    v.setUint32(16, queueSize, true);
  }

  /** The log a previous vdx kept for this device; throws saying what is wrong with one that does not fit. */
  openLog(numQueues: number, queueSize: number): void {
    if (!existsSync(this.logPath)) throw new Error(`${this.logPath} is missing: the device's progress is unknown`);
    const len = LOG_HDR + numQueues * regionStride(queueSize);
    const size = statSync(this.logPath).size;
    if (size !== len) throw new Error(`${this.logPath} is ${size} bytes; ${numQueues} queues of ${queueSize} need ${len}`);
    const fd = openSync(this.logPath, FS.O_RDWR);
    try {
      this.mapLog(fd, len);
    } finally {
      closeSync(fd);
    }
    const v = new DataView(this.log!.map.buffer);
    const bad = (why: string) => {
      this.closeLog();
      return new Error(`${this.logPath}: ${why}`);
    };
    if (Buffer.from(this.log!.map.buffer, 0, 8).toString('latin1') !== MAGIC) throw bad('not a vdx device log');
    if (v.getUint32(8, true) !== LOG_VERSION) throw bad(`version ${v.getUint32(8, true)}, expected ${LOG_VERSION}`);
    if (v.getUint32(12, true) !== numQueues || v.getUint32(16, true) !== queueSize) {
      throw bad(`kept for ${v.getUint32(12, true)} queues of ${v.getUint32(16, true)}, the device has ${numQueues} of ${queueSize}`);
    }
  }

  private mapLog(fd: number, len: number): void {
    const n = this.native;
    const map = n.mmap(fd, 0, len, n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED);
    this.log = { map, len, u32: new Uint32Array(map.buffer, 0, LOG_HDR >> 2) };
  }

  /** The driver status vdx last acknowledged. */
  get status(): number {
    return this.log?.u32[5] ?? 0;
  }
  set status(s: number) {
    if (this.log) this.log.u32[5] = s;
  }

  /** Queue `index`'s region: its host address and byte offset in `buffer`. */
  region(index: number, queueSize: number): { buffer: ArrayBuffer; offset: number; addr: number } {
    const l = this.log;
    if (!l) throw new Error('no device log');
    const offset = LOG_HDR + index * regionStride(queueSize);
    return { buffer: l.map.buffer, offset, addr: l.map.addr + offset };
  }

  /** A reset: nothing is in flight, every region starts fresh at the next start. */
  clearRegions(): void {
    if (this.log) new Uint8Array(this.log.map.buffer, LOG_HDR).fill(0);
  }

  closeLog(): void {
    const l = this.log;
    if (!l) return;
    this.log = undefined;
    this.native.munmap(l.map.buffer, l.map.addr, l.len);
  }

  /** The device is gone: so is what vdx kept of it. */
  remove(): void {
    this.closeLog();
    rmSync(this.logPath, { force: true });
    rmSync(this.recordPath, { force: true });
  }
}
