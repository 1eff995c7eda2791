// FIFOs of I/O for bdev channels: held completions (null, malloc: done() must
// never run inside submit()) and backlogs waiting for a submission slot.
import type { BdevIo } from './types.js';

export class IoFifo {
  private ring: (BdevIo | undefined)[];
  private head = 0;
  private count = 0;

  constructor(capacity = 1024) {
    this.ring = new Array<BdevIo | undefined>(capacity).fill(undefined);
  }

  push(io: BdevIo): void {
    if (this.count === this.ring.length) this.grow();
    this.ring[(this.head + this.count) % this.ring.length] = io;
    this.count++;
  }

  shift(): BdevIo | undefined {
    if (this.count === 0) return undefined;
    const io = this.ring[this.head];
    this.ring[this.head] = undefined;
    this.head = (this.head + 1) % this.ring.length;
    this.count--;
    return io;
  }

  /** The oldest without taking it. */
  peek(): BdevIo | undefined {
    return this.count === 0 ? undefined : this.ring[this.head];
  }

  size(): number {
    return this.count;
  }

  // Rare: more I/O in flight than expected; double once, off the steady state.
  private grow(): void {
    const next = new Array<BdevIo | undefined>(this.ring.length * 2).fill(undefined);
    for (let i = 0; i < this.count; i++) next[i] = this.ring[(this.head + i) % this.ring.length];
    this.ring = next;
    this.head = 0;
  }
}

export class DeferredCompletions extends IoFifo {
  /** Run done() for what was queued before this call; returns how many ran. */
  drain(): number {
    let n = this.size();
    const ran = n;
    while (n-- > 0) {
      const io = this.shift()!;
      io.done(io);
    }
    return ran;
  }
}
