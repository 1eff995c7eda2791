// A bdev channel for engine tests: records what was submitted and completes it
// at the next poll() (never inside submit, as the Channel contract says), with
// `fail[op]`, else `result`, as the status.
import type { BdevIo, Channel } from '../../../src/bdev/types.js';

export class FakeChannel implements Channel {
  readonly notifyFd = -1;
  readonly submitted: { op: number; off: number; len: number; unmap: boolean }[] = [];
  private pending: BdevIo[] = [];
  result = 0;
  fail: Partial<Record<number, number>> = {};
  submit(io: BdevIo): number {
    this.submitted.push({ op: io.op, off: io.offsetBytes, len: io.lenBytes, unmap: io.unmap });
    this.pending.push(io);
    return 0;
  }
  poll(): number {
    const p = this.pending;
    this.pending = [];
    for (const io of p) {
      io.status = this.fail[io.op] ?? this.result;
      io.done(io);
    }
    return p.length;
  }
  kernelInflight(): number {
    return 0;
  }
  inflight(): number {
    return this.pending.length;
  }
  clearNotify(): void {}
  close(): void {}
}
