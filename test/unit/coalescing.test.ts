import { describe, expect, test } from 'vitest';
import { IrqCoalescer, newCoalescingBuffer, readCoalescing, writeCoalescing } from '../../src/virtio/coalescing.js';
import { loadNet } from '../../src/native/net.js';
import { ReactorRig } from './helpers/reactor-rig.js';

/** A coalescer with SPDK-style settings, and a queue that completes `iops` requests a second. */
function rig(delayBaseUs: number, iopsThreshold: number) {
  const buf = newCoalescingBuffer({ delayBaseUs, iopsThreshold });
  const co = new IrqCoalescer(buf);
  let completed = 0;
  let now = 1000;
  return {
    buf,
    co,
    /** advance the clock by ms with the queue completing at `iops`, then ask */
    ask(ms: number, iops: number): boolean {
      now += ms;
      completed += (iops * ms) / 1000;
      return co.due(now, completed);
    },
    take: () => co.takeOwed(now),
    /** 50 k IOPS over a first interval, then one interrupt held back (what the settings of the tests below give) */
    holdOne(): void {
      this.ask(0, 50_000);
      this.ask(10, 50_000);
      expect(this.ask(0.01, 50_000)).toBe(false);
    },
  };
}

describe('interrupt coalescing', () => {
  test('off (delay 0): every interrupt the driver wants goes', () => {
    const r = rig(0, 100);
    for (let i = 0; i < 50; i++) expect(r.ask(0.5, 1_000_000)).toBe(true);
    expect(r.co.isOwed).toBe(false);
  });

  test('no settings at all: as off', () => {
    const co = new IrqCoalescer(undefined);
    expect(co.enabled).toBe(false);
    expect(co.due(0, 0)).toBe(true);
    expect(co.due(0.001, 1)).toBe(true);
  });

  test('above the threshold: at most one interrupt per delay_base_us x (IOPS - threshold) / threshold', () => {
    // 200 k IOPS against 100 k: delay = 100 µs x 1 = 0.1 ms
    const r = rig(100, 100_000);
    expect(r.ask(0, 200_000)).toBe(true); // the first interval has measured nothing
    expect(r.ask(10, 200_000)).toBe(true); // a new interval: the delay is set from now
    expect(r.ask(0.05, 200_000)).toBe(false);
    expect(r.co.isOwed).toBe(true);
    expect(r.ask(0.04, 200_000)).toBe(false);
    expect(r.ask(0.02, 200_000)).toBe(true); // 0.11 ms after the last
    expect(r.co.isOwed).toBe(false);
    // 400 k: three times the excess, so 0.3 ms apart
    r.ask(10, 400_000);
    expect(r.ask(0.25, 400_000)).toBe(false);
    expect(r.ask(0.06, 400_000)).toBe(true);
  });

  test('at or below the threshold no interrupt waits, and a shrunk delay applies at once', () => {
    const r = rig(1000, 100_000);
    r.ask(0, 300_000);
    expect(r.ask(10, 300_000)).toBe(true); // delay now 2 ms
    expect(r.ask(1, 300_000)).toBe(false);
    // The load falls below the threshold (75 k over the interval): the next interval ends the delay (SPDK would keep the 2 ms).
    expect(r.ask(9, 50_000)).toBe(true);
    expect(r.ask(0.01, 50_000)).toBe(true);
  });

  test('an owed interrupt goes when taken (the reactor sleeps, the queue stops), once', () => {
    const r = rig(1000, 100);
    r.holdOne();
    expect(r.take()).toBe(true);
    expect(r.take()).toBe(false);
    // and the delay runs from then
    expect(r.ask(0.01, 50_000)).toBe(false);
  });

  test('settings changed at run time apply to a running queue: turned off, an owed interrupt goes on the next ask', () => {
    const r = rig(1000, 100);
    r.holdOne();
    writeCoalescing(r.buf, { delayBaseUs: 0, iopsThreshold: 100 });
    expect(r.co.enabled).toBe(false);
    expect(r.ask(0.01, 50_000)).toBe(true);
    expect(readCoalescing(r.buf)).toEqual({ delayBaseUs: 0, iopsThreshold: 100 });
  });

  test('a queue asked about after a quiet spell measures the rate over the whole spell', () => {
    const r = rig(100, 100_000);
    r.ask(0, 0);
    // 1 s with 150 k completions in all: 150 k IOPS, delay 50 µs
    expect(r.ask(1000, 150_000)).toBe(true);
    expect(r.ask(0.04, 0)).toBe(false);
    expect(r.ask(0.02, 0)).toBe(true);
  });

  test('settings outside what SPDK accepts are refused with what would be right', () => {
    const buf = newCoalescingBuffer({ delayBaseUs: 0, iopsThreshold: 60_000 });
    expect(() => writeCoalescing(buf, { delayBaseUs: 10, iopsThreshold: 99 })).toThrow('iops_threshold=99 must be an integer of at least 100');
    expect(() => writeCoalescing(buf, { delayBaseUs: 1.5, iopsThreshold: 1000 })).toThrow('delay_base_us=1.5 must be an integer in 0..1000000');
    expect(() => writeCoalescing(buf, { delayBaseUs: -1, iopsThreshold: 1000 })).toThrow(/delay_base_us=-1/);
    expect(readCoalescing(buf)).toEqual({ delayBaseUs: 0, iopsThreshold: 60_000 });
  });
});

describe('the reactor and interrupts held back', () => {
  test('what coalescing held back goes before the reactor sleeps and when its queue stops', () => {
    const rig = new ReactorRig();
    const n = rig.native;
    const call = n.eventfd(0, n.EFD_NONBLOCK | n.EFD_CLOEXEC);
    const sent = () => {
      const v = n.eventfdRead(call); // the count since the last read; nothing written reads as an error (EAGAIN)
      return v > 0 ? v : 0;
    };
    const blk = { sizeBytes: 1 << 20, blockSize: 512, readonly: false, discard: false, writeZeroes: false, maxDiscardSectors: 0, maxWriteZeroesSectors: 0, maxDiscardSeg: 0, maxWriteZeroesSeg: 0, serial: 'c' };
    const coalescing = newCoalescingBuffer({ delayBaseUs: 1_000_000, iopsThreshold: 100 });
    const seq = rig.request({ op: 'addQueue', queue: rig.spec(blk, { callFd: call, coalescing }) });
    expect(rig.replies).toContainEqual({ seq, ok: true });
    const read = () => {
      rig.postRead();
      rig.reactor.iterate();
    };
    for (let i = 0; i < 3; i++) read();
    expect(sent()).toBe(3); // the first interval measured nothing: no delay yet
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 12);
    read(); // a new interval: 4 in 12 ms is over 100 IOPS, so the next interrupts wait for seconds
    expect(sent()).toBe(1);
    read();
    read();
    expect(sent()).toBe(0);
    expect(rig.drv.usedIdx()).toBe(6); // the completions are published all the same
    (rig.reactor as unknown as { sleep(kernelOwes: boolean): void }).sleep(false); // this queue has no kick fd: the reactor polls on, it does not block
    expect(sent()).toBe(1);
    (rig.reactor as unknown as { sleep(kernelOwes: boolean): void }).sleep(false);
    expect(sent()).toBe(0); // nothing new was owed
    read();
    expect(sent()).toBe(0);
    const stop = rig.request({ op: 'stopQueue', id: 'n0#1/0' });
    expect(rig.replies).toContainEqual(expect.objectContaining({ seq: stop, ok: true }));
    expect(sent()).toBe(1);
    rig.close();
    n.close(call);
  });

  test('while the kernel still owes I/O, a held-back interrupt waits for its time: the reactor sleeps with a timer set for it', () => {
    const rig = new ReactorRig();
    const n = rig.native;
    const call = n.eventfd(0, n.EFD_NONBLOCK | n.EFD_CLOEXEC);
    const sent = () => Math.max(0, n.eventfdRead(call));
    const blk = { sizeBytes: 1 << 20, blockSize: 512, readonly: false, discard: false, writeZeroes: false, maxDiscardSectors: 0, maxWriteZeroesSectors: 0, maxDiscardSeg: 0, maxWriteZeroesSeg: 0, serial: 'c' };
    // 4 requests in 12 ms: 333 IOPS, so 2000 µs x (333 - 100) / 100 = 4.7 ms between interrupts
    rig.request({ op: 'addQueue', queue: rig.spec(blk, { callFd: call, coalescing: newCoalescingBuffer({ delayBaseUs: 2000, iopsThreshold: 100 }) }) });
    const read = () => {
      rig.postRead();
      rig.reactor.iterate();
    };
    for (let i = 0; i < 3; i++) read();
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 12);
    read();
    read();
    expect(sent()).toBe(4);
    const reactor = rig.reactor as unknown as { sleep(kernelOwes: boolean): void; irqTimerFd: number };
    reactor.sleep(true);
    expect(sent()).toBe(0); // held: the kernel's completions may still join it
    const net = loadNet();
    expect(reactor.irqTimerFd).toBeGreaterThanOrEqual(0);
    expect(net.timerfdRead(reactor.irqTimerFd)).toBeLessThan(0); // not yet (EAGAIN)
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 6);
    expect(net.timerfdRead(reactor.irqTimerFd)).toBe(1); // fired by when it falls due: a sleeping reactor wakes for it
    rig.reactor.iterate();
    expect(sent()).toBe(1); // and the pass after sends it
    rig.close();
    n.close(call);
  });
});
