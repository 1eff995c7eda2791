// A Reactor driven pass by pass on this thread (iterate()), with one split
// queue (on a null bdev unless the spec says otherwise) in real mapped memory,
// for tests of what the reactor itself does around its queues.
import type { BdevDesc } from '../../../src/bdev/types.js';
import type { QueueSpec, ReactorReply, ReactorRequest } from '../../../src/core/messages.js';
import { Reactor } from '../../../src/core/reactor.js';
import { allocReactorCounters } from '../../../src/core/reactor-counters.js';
import { loadNative } from '../../../src/native/index.js';
import type { BlkParams } from '../../../src/virtio/blk.js';
import { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VRING_DESC_F_NEXT as NEXT, VRING_DESC_F_WRITE as WRITE } from '../../../src/virtio/constants.js';
import { TestDriver, d } from './driver.js';

const MEM = 1 << 20;

export const nullBdev = (): BdevDesc => ({
  info: { name: 'n0', type: 'null', blockSize: 512, sizeBytes: 1 << 20, readonly: false, caps: { flush: true, discard: true, writeZeroes: true }, maxDiscardBytes: 1 << 20 },
  params: {},
});

export class ReactorRig {
  readonly native = loadNative();
  private readonly map = this.native.mmap(-1, 0, MEM, this.native.PROT_READ | this.native.PROT_WRITE, this.native.MAP_SHARED | this.native.MAP_ANONYMOUS);
  readonly drv: TestDriver;
  private readonly wakeFd = this.native.eventfd(0, this.native.EFD_NONBLOCK | this.native.EFD_CLOEXEC);
  private readonly pending = new SharedArrayBuffer(4);
  readonly counters = allocReactorCounters();
  private readonly inbox: { seq: number; req: ReactorRequest }[] = [];
  readonly replies: ReactorReply[] = [];
  private seq = 0;
  readonly reactor = new Reactor(this.native, { index: 0, wakeFd: this.wakeFd, pending: this.pending, idleSpinUs: 0, cpus: [], counters: this.counters }, {
    take: () => this.inbox.shift(),
    reply: (r) => this.replies.push(r),
  });

  constructor(ringSize = 16) {
    this.drv = new TestDriver(ringSize, MEM, this.map.addr, this.map.buffer);
  }

  /** The queue on the rig's ring, with `over` on top. */
  spec(blk: BlkParams, over: Partial<QueueSpec> = {}): QueueSpec {
    const host = (off: number) => this.map.addr + off;
    return {
      id: 'n0#1/0',
      device: 'n0#1',
      memory: { generation: 1, regions: [{ gpa: 0, uva: -1, hostAddr: this.map.addr, lenBytes: MEM }] },
      size: this.drv.size,
      descAddr: host(this.drv.layout.desc.offset),
      availAddr: host(this.drv.layout.avail.offset),
      usedAddr: host(this.drv.layout.used.offset),
      eventIdx: false,
      indirect: false,
      lastAvail: 0,
      usedIdx: 0,
      kickFd: -1,
      callFd: -1,
      bdev: nullBdev(),
      blk,
      ...over,
    };
  }

  /** Hand the reactor a control request and run one pass; returns its sequence number. */
  request(req: ReactorRequest): number {
    const seq = ++this.seq;
    this.inbox.push({ seq, req });
    Atomics.store(new Int32Array(this.pending), 0, 1);
    this.reactor.iterate();
    return seq;
  }

  /** Make a 4 KiB read (or write) available at descriptor `head` (its 3 descriptors must be free: the request there completed). */
  postRead(head = 0, write = false): void {
    const drv = this.drv;
    const h = drv.alloc(16);
    drv.dv.setUint32(h, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, true);
    drv.putChain(head, [d(h, 16, NEXT), d(drv.alloc(4096), 4096, NEXT | (write ? 0 : WRITE)), d(drv.alloc(1, 1), 1, WRITE)]);
    drv.makeAvail(head);
  }

  close(): void {
    this.request({ op: 'shutdown' });
    this.native.close(this.wakeFd);
    this.native.munmap(this.map.buffer, this.map.addr, MEM);
  }
}
