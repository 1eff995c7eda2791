// QoS token accounting (bdev/qos.ts), on a simulated clock: rates over time,
// buckets shared by two queues (two reactors), byte limits per direction, an
// I/O larger than the bucket, and lifting a limit.
import { describe, expect, test } from 'vitest';
import { QOS_BYTES, QosGate, qosLimits, setQosLimits } from '../../src/bdev/qos.js';
import { BdevIo, IoOp } from '../../src/bdev/types.js';

const MiB = 1 << 20;
function io(op: number, lenBytes: number): BdevIo {
  const x = new BdevIo();
  x.op = op as BdevIo['op'];
  x.lenBytes = lenBytes;
  return x;
}

/** Offer an I/O every `stepMs` for `seconds` of simulated time; count what the gates let through. */
function run(gates: QosGate[], clock: { t: number }, seconds: number, stepMs: number, make: () => BdevIo): number {
  let admitted = 0;
  const end = clock.t + seconds * 1000;
  for (let k = 0; clock.t < end; k++) {
    if (gates[k % gates.length]!.admit(make())) admitted++;
    clock.t += stepMs;
  }
  return admitted;
}

describe('QoS token buckets', () => {
  test('1000 I/O per second: one second of offers every 0.1 ms admits 1000, plus the 10 ms burst', () => {
    const clock = { t: 5000 };
    const shared = new SharedArrayBuffer(QOS_BYTES);
    setQosLimits(shared, { rw_ios_per_sec: 1000 }, () => clock.t);
    const gate = new QosGate(shared, () => clock.t);
    expect(gate.limited()).toBe(true);
    const n = run([gate], clock, 1, 0.1, () => io(IoOp.READ, 4096));
    expect(n).toBeGreaterThanOrEqual(1000);
    expect(n).toBeLessThanOrEqual(1011);
  });

  test('two queues on one bdev share the buckets: together they get the limit, not twice it', () => {
    const clock = { t: 0 };
    const shared = new SharedArrayBuffer(QOS_BYTES);
    setQosLimits(shared, { rw_ios_per_sec: 5000 }, () => clock.t);
    const a = new QosGate(shared, () => clock.t);
    const b = new QosGate(shared, () => clock.t);
    const n = run([a, b], clock, 2, 0.05, () => io(IoOp.WRITE, 512));
    expect(n).toBeGreaterThanOrEqual(10_000);
    expect(n).toBeLessThanOrEqual(10_051);
  });

  test('bytes: reads and writes each against their own limit and against the shared one', () => {
    const clock = { t: 0 };
    const shared = new SharedArrayBuffer(QOS_BYTES);
    setQosLimits(shared, { r_mbytes_per_sec: 1, rw_mbytes_per_sec: 3 }, () => clock.t);
    const g = new QosGate(shared, () => clock.t);
    // 64 KiB reads for 4 s at 1 MiB/s: 64 of them, plus one bucket (64 KiB: one read).
    const reads = run([g], clock, 4, 1, () => io(IoOp.READ, 64 * 1024));
    expect(reads).toBeGreaterThanOrEqual(64);
    expect(reads).toBeLessThanOrEqual(66);
    // Writes have no limit of their own, only the shared 3 MiB/s.
    const writes = run([g], clock, 2, 1, () => io(IoOp.WRITE, 64 * 1024));
    expect(writes).toBeGreaterThanOrEqual(96);
    expect(writes).toBeLessThanOrEqual(98);
    // Flush moves no bytes: only an I/O limit would hold it.
    expect(g.admit(io(IoOp.FLUSH, 0))).toBe(true);
    expect(qosLimits(shared)).toEqual({ rw_ios_per_sec: 0, rw_mbytes_per_sec: 3, r_mbytes_per_sec: 1, w_mbytes_per_sec: 0 });
  });

  test('an I/O larger than a full bucket passes, and the debt is waited out; waitMs says for how long', () => {
    const clock = { t: 0 };
    const shared = new SharedArrayBuffer(QOS_BYTES);
    setQosLimits(shared, { w_mbytes_per_sec: 1 }, () => clock.t);
    const g = new QosGate(shared, () => clock.t);
    expect(g.admit(io(IoOp.WRITE, 4 * MiB))).toBe(true);
    expect(g.admit(io(IoOp.WRITE, 4096))).toBe(false);
    // 4 MiB of debt less the 64 KiB bucket it had: about 3.94 s to pay back, then 4 KiB more.
    expect(g.waitMs).toBeGreaterThan(3900);
    expect(g.waitMs).toBeLessThan(4100);
    clock.t += g.waitMs + 0.01;
    expect(g.admit(io(IoOp.WRITE, 4096))).toBe(true);
    // Reads are not limited by a write limit.
    expect(g.admit(io(IoOp.READ, 4 * MiB))).toBe(true);
  });

  test('0 lifts a limit; a limit not given stays; with none left the gate is open', () => {
    const clock = { t: 0 };
    const shared = new SharedArrayBuffer(QOS_BYTES);
    const g = new QosGate(shared, () => clock.t);
    expect(g.limited()).toBe(false);
    setQosLimits(shared, { rw_ios_per_sec: 10, w_mbytes_per_sec: 5 }, () => clock.t);
    setQosLimits(shared, { rw_ios_per_sec: 0 }, () => clock.t);
    expect(qosLimits(shared)).toMatchObject({ rw_ios_per_sec: 0, w_mbytes_per_sec: 5 });
    expect(g.limited()).toBe(true);
    setQosLimits(shared, { w_mbytes_per_sec: 0 }, () => clock.t);
    expect(g.limited()).toBe(false);
  });
});
