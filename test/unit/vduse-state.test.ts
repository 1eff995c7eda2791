// What vdx keeps of a VDUSE device for a restarted vdx (frontend/vduse/state.ts):
// the record compared on a re-attach, and the mapped log of status and
// in-flight regions; records and logs that do not add up are refused by name.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { loadNative } from '../../src/native/index.js';
import { processAlive, recordDifference, VduseState, type VduseRecord } from '../../src/frontend/vduse/state.js';
import { inflightSplitStride } from '../../src/virtio/inflight.js';
import { inflightPackedStride } from '../../src/virtio/inflight-packed.js';

const native = loadNative();
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function state(name = 'vd0'): VduseState {
  const dir = mkdtempSync(join(tmpdir(), 'vdx-state-'));
  dirs.push(dir);
  return new VduseState(native, join(dir, 'run'), name);
}
const config = (sectors: number, blockSize = 512) => {
  const b = Buffer.alloc(60);
  b.writeUInt32LE(sectors, 0);
  b.writeUInt32LE(blockSize, 20);
  return b.toString('hex');
};
const rec = (o: Partial<VduseRecord> = {}): VduseRecord => ({ name: 'vd0', features: '130000064', numQueues: 2, queueSize: 128, config: config(131072), ...o });

describe('device record', () => {
  test('written 0600 in a 0700 directory, read back', () => {
    const s = state();
    s.writeRecord(rec());
    expect(s.readRecord()).toEqual(rec());
    expect(statSync(s.recordPath).mode & 0o777).toBe(0o600);
    expect(statSync(s.dir).mode & 0o777).toBe(0o700);
  });

  test('the serving process: kept, not compared; a live one is told from a dead one', () => {
    const s = state();
    s.writeRecord(rec({ pid: 4242 }));
    expect(s.readRecord()).toEqual(rec({ pid: 4242 }));
    expect(recordDifference(rec({ pid: 1 }), rec({ pid: 2 }))).toBeUndefined();
    expect(processAlive(process.ppid)).toBe(true);
    expect(processAlive(process.pid)).toBe(false); // this process takes back what it finds, it does not fear itself
    expect(processAlive(2 ** 22 + 12345)).toBe(false); // beyond pid_max
  });

  test('none: undefined (a device vdx did not create)', () => {
    expect(state().readRecord()).toBeUndefined();
  });

  test('a record that is not vdx\'s, or is another device\'s, is refused naming the file', () => {
    const s = state();
    s.writeRecord(rec());
    writeFileSync(s.recordPath, '{"vdx":1,');
    expect(() => s.readRecord()).toThrow(/vduse-vd0.json is not vdx's device record/);
    writeFileSync(s.recordPath, JSON.stringify({ vdx: 1, ...rec({ name: 'other' }) }));
    expect(() => s.readRecord()).toThrow(/is not a version 1 record of VDUSE device 'vd0'/);
    writeFileSync(s.recordPath, JSON.stringify({ vdx: 1, ...rec({ features: 'xyz' }) }));
    expect(() => s.readRecord()).toThrow(/not a version 1 record/);
  });

  test('differences are named with the key that would fix them', () => {
    expect(recordDifference(rec(), rec())).toBeUndefined();
    expect(recordDifference(rec(), rec({ numQueues: 1 }))).toBe('it has 2 queues, the export asks for 1 (num-queues=)');
    expect(recordDifference(rec(), rec({ queueSize: 256 }))).toBe('its queues hold 128 descriptors, the export asks for 256 (queue-size=)');
    expect(recordDifference(rec(), rec({ features: '130000065' }))).toMatch(/offers features 0x130000064, the export would offer 0x130000065/);
    expect(recordDifference(rec(), rec({ config: config(262144) }))).toBe('its capacity is 131072 sectors, the bdev has 262144');
    expect(recordDifference(rec(), rec({ config: config(131072, 4096) }))).toBe('its block size is 512, the export\'s 4096');
    // a resize while no vdx served the device is not another device
    expect(recordDifference(rec(), rec({ config: config(262144) }), { ignoreCapacity: true })).toBeUndefined();
    expect(recordDifference(rec(), rec({ config: config(262144, 4096) }), { ignoreCapacity: true })).toBe('its block size is 512, the export\'s 4096');
  });
});

describe('device log', () => {
  const stride = Math.max(inflightSplitStride(128), inflightPackedStride(128));

  test('created zeroed for the queues; status and regions survive a reopen', () => {
    const s = state();
    s.createLog(2, 128);
    expect(statSync(s.logPath).size).toBe(64 + 2 * stride);
    s.status = 0xf;
    const r1 = s.region(1, 128);
    expect(r1.offset).toBe(64 + stride);
    new Uint8Array(r1.buffer, r1.offset, 4).set([1, 2, 3, 4]);
    s.closeLog();
    const again = new VduseState(native, s.dir, 'vd0');
    again.openLog(2, 128);
    expect(again.status).toBe(0xf);
    const r = again.region(1, 128);
    expect([...new Uint8Array(r.buffer, r.offset, 4)]).toEqual([1, 2, 3, 4]);
    again.clearRegions();
    expect([...new Uint8Array(r.buffer, r.offset, 4)]).toEqual([0, 0, 0, 0]);
    expect(again.status).toBe(0xf);
    again.closeLog();
  });

  test('a log that does not fit the device is refused saying why', () => {
    const s = state();
    expect(() => s.openLog(2, 128)).toThrow(/vduse-vd0.log is missing/);
    s.createLog(2, 128);
    s.closeLog();
    expect(() => s.openLog(1, 128)).toThrow(/is \d+ bytes; 1 queues of 128 need/);
    const bytes = readFileSync(s.logPath);
    bytes.write('XXXXXXXX', 0, 'latin1');
    writeFileSync(s.logPath, bytes);
    expect(() => s.openLog(2, 128)).toThrow(/vduse-vd0.log: not a vdx device log/);
    bytes.write('VDXVDLOG', 0, 'latin1');
    bytes.writeUInt32LE(9, 8);
    writeFileSync(s.logPath, bytes);
    expect(() => s.openLog(2, 128)).toThrow(/version 9, expected 1/);
    bytes.writeUInt32LE(1, 8);
    bytes.writeUInt32LE(3, 12);
    writeFileSync(s.logPath, bytes);
    expect(() => s.openLog(2, 128)).toThrow(/kept for 3 queues of 128, the device has 2 of 128/);
  });

  test('remove: the record and the log are gone', () => {
    const s = state();
    s.writeRecord(rec());
    s.createLog(2, 128);
    s.remove();
    expect(s.readRecord()).toBeUndefined();
    expect(() => s.openLog(2, 128)).toThrow(/missing/);
  });
});
