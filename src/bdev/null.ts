// null bdev: completes everything successfully without touching data (reads
// leave the buffers as they were), like SPDK's null bdev and QEMU's null-co.
import { DeferredCompletions } from './deferred.js';
import { parseBlockSize, parseSize, checkKeys } from './spec.js';
import type { BdevDesc, BdevIo, BdevModule, Channel } from './types.js';

class NullChannel implements Channel {
  readonly notifyFd = -1;
  private readonly q = new DeferredCompletions();

  submit(io: BdevIo): number {
    io.status = 0;
    this.q.push(io);
    return 0;
  }
  poll(): number {
    return this.q.drain();
  }
  kernelInflight(): number {
    return 0;
  }
  inflight(): number {
    return this.q.size();
  }
  clearNotify(): void {}
  close(): void {}
}

export const nullBdev: BdevModule = {
  type: 'null',
  keys: {
    name: 'bdev name (required)',
    size: 'capacity, e.g. 1G, 512M (required)',
    'block-size': 'logical block size: 512 or 4096 (default 512)',
  },
  normalize(spec) {
    checkKeys('null', spec, nullBdev.keys, ['name', 'size']);
    const blockSize = parseBlockSize(spec['block-size']);
    return { name: spec.name!, size: String(parseSize('size', spec.size!, blockSize)), 'block-size': String(blockSize) };
  },
  create(spec): BdevDesc {
    const blockSize = Number(spec['block-size']);
    const sizeBytes = Number(spec.size);
    return {
      info: {
        name: spec.name!,
        type: 'null',
        blockSize,
        sizeBytes,
        readonly: false,
        caps: { flush: true, discard: true, writeZeroes: true },
        maxDiscardBytes: 1 << 30,
      },
      params: {},
    };
  },
  open(): Channel {
    return new NullChannel();
  },
  /** A null bdev holds nothing, so any size will do (SPDK's bdev_null_resize). */
  resize(desc, size): number {
    if (size === undefined) throw new Error('null: give the new size');
    const bytes = parseSize('size', size, desc.info.blockSize);
    // A driver that already saw the larger size would be refused what it thinks is there (SPDK refuses too).
    if (bytes < desc.info.sizeBytes) throw new Error(`null: size=${size} is smaller than the bdev (${desc.info.sizeBytes} bytes); null bdevs only grow`);
    desc.info.sizeBytes = bytes;
    return desc.info.sizeBytes;
  },
  describe: () => ({ productName: 'Null disk', driverSpecific: {} }),
  destroy(): void {},
};
