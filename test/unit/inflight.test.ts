// The vhost-user in-flight region (split rings): the layout libvhost-user
// writes, what the ring records on the hot path, and the recovery decision
// after a crash at each point of a request's life, including hostile regions.
import { describe, expect, test } from 'vitest';
import { SEG_STRIDE } from '../../src/virtio/memory.js';
import { inflightSplitStride, recoverSplit, SplitInflight, type SplitRecovery } from '../../src/virtio/inflight.js';
import { NO_HEAD, SplitRing } from '../../src/virtio/split-ring.js';
import { TestDriver, d } from './helpers/driver.js';

const N = 16;
const segs = new Float64Array(SEG_STRIDE * 8);

function region(descNum = N): { buf: ArrayBuffer; v: DataView } {
  const buf = new ArrayBuffer(2 * inflightSplitStride(descNum));
  return { buf, v: new DataView(buf) };
}
const ok = (r: SplitRecovery | string): SplitRecovery => {
  if (typeof r === 'string') throw new Error(r);
  return r;
};

/** A driver with N descriptors, each a one-segment chain, and a ring tracked in `buf` at `at`. */
function tracked(buf: ArrayBuffer, at: number, drv: TestDriver) {
  const usedIdx = drv.usedIdx();
  const rec = ok(recoverSplit(buf, at, N, N, usedIdx));
  const ring = new SplitRing(drv.mem, drv.layout, false, true, rec.lastAvail, usedIdx, { inflight: new SplitInflight(buf, at, N, rec.nextCounter), resubmit: rec.resubmit });
  return { ring, rec };
}

function driver(): TestDriver {
  const drv = new TestDriver(N);
  for (let i = 0; i < N; i++) drv.putChain(i, [d(0x8000 + 512 * i, 512)]);
  return drv;
}

const popAll = (ring: SplitRing): number[] => {
  const out: number[] = [];
  for (let h = ring.pop(segs, 8); h !== NO_HEAD; h = ring.pop(segs, 8)) out.push(h);
  return out;
};

describe('in-flight region layout', () => {
  test('stride is libvhost-user\'s (and DPDK\'s): 64-byte aligned 16 + 16 per descriptor', () => {
    expect(inflightSplitStride(128)).toBe(2112);
    expect(inflightSplitStride(256)).toBe(4160);
    expect(inflightSplitStride(1024)).toBe(16448);
  });

  test('fresh region: header written, nothing resubmitted, the ring starts at used->idx', () => {
    const { buf, v } = region();
    const at = inflightSplitStride(N); // queue 1's part
    new Uint8Array(buf, at + 16, 16).fill(0xff); // garbage in a never-used region is ignored
    const r = ok(recoverSplit(buf, at, N, N, 7));
    expect(r).toEqual({ lastAvail: 7, resubmit: [], nextCounter: 0, inherited: false });
    expect(v.getUint16(at + 8, true)).toBe(1);
    expect(v.getUint16(at + 10, true)).toBe(N);
    expect(v.getUint16(at + 14, true)).toBe(7);
    expect(v.getUint8(at + 16)).toBe(0);
    expect(v.getUint16(8, true)).toBe(0); // queue 0 untouched
  });

  test('fetch stamps counter then flag; publish links the batch, then clears it and records used_idx', () => {
    const { buf, v } = region();
    ok(recoverSplit(buf, 0, N, N, 0));
    const t = new SplitInflight(buf, 0, N, 2 ** 32 + 5);
    t.fetched(3);
    expect(v.getUint8(16 + 16 * 3)).toBe(1);
    expect(v.getUint32(16 + 16 * 3 + 8, true)).toBe(5);
    expect(v.getUint32(16 + 16 * 3 + 12, true)).toBe(1);
    t.fetched(9);
    t.pushed(9);
    t.pushed(3);
    expect(v.getUint16(12, true)).toBe(3); // last_batch_head
    expect(v.getUint16(16 + 16 * 3 + 6, true)).toBe(9);
    t.published(0, 2);
    expect(v.getUint8(16 + 16 * 3)).toBe(0);
    expect(v.getUint8(16 + 16 * 9)).toBe(0);
    expect(v.getUint16(14, true)).toBe(2);
  });
});

describe('recovery after a crash (crafted through the ring itself)', () => {
  test('nothing completed: every fetched head runs again in fetch order, then the avail ring from where it left off', () => {
    const { buf } = region();
    const drv = driver();
    const { ring } = tracked(buf, 0, drv);
    drv.makeAvail(5, 2, 11);
    expect(popAll(ring)).toEqual([5, 2, 11]);
    // -- killed; the next daemon:
    drv.makeAvail(4);
    const again = tracked(buf, 0, drv);
    expect(again.rec.resubmit).toEqual([5, 2, 11]);
    expect(again.rec.lastAvail).toBe(3);
    expect(popAll(again.ring)).toEqual([5, 2, 11, 4]);
  });

  test('completed out of order and published: only what the guest has not seen runs again', () => {
    const { buf } = region();
    const drv = driver();
    const { ring } = tracked(buf, 0, drv);
    drv.makeAvail(5, 2, 11, 7);
    popAll(ring);
    ring.pushUsed(11, 0);
    ring.pushUsed(5, 0);
    ring.publishUsed();
    const again = tracked(buf, 0, drv);
    expect(again.rec.resubmit).toEqual([2, 7]);
    expect(again.rec.lastAvail).toBe(4); // used 2 + 2 in flight
  });

  test('pushed but not published: the guest never saw them, so they run again', () => {
    const { buf } = region();
    const drv = driver();
    const { ring } = tracked(buf, 0, drv);
    drv.makeAvail(1, 2, 3);
    popAll(ring);
    ring.pushUsed(2, 0);
    const again = tracked(buf, 0, drv);
    expect(again.rec.resubmit).toEqual([1, 2, 3]);
  });

  test('killed after used->idx moved but before the batch was cleared: the batch list clears it, nothing runs twice', () => {
    const { buf, v } = region();
    const drv = driver();
    const { ring } = tracked(buf, 0, drv);
    drv.makeAvail(1, 2, 3, 4);
    popAll(ring);
    ring.pushUsed(3, 0);
    ring.pushUsed(1, 0);
    ring.publishUsed();
    // the next batch: used entries and links written, used->idx stored, then killed
    ring.pushUsed(4, 0);
    ring.pushUsed(2, 0);
    const before = new Uint8Array(buf.slice(0));
    ring.publishUsed();
    new Uint8Array(buf).set(before); // undo what published() did after the guest-visible store
    expect(drv.usedIdx()).toBe(4);
    expect(v.getUint16(14, true)).toBe(2);
    const again = tracked(buf, 0, drv);
    expect(again.rec.resubmit).toEqual([]);
    expect(again.rec.lastAvail).toBe(4);
    expect(v.getUint16(14, true)).toBe(4);
  });

  test('a resubmitted head keeps its stamp: after a second crash the order is still the first fetch order', () => {
    const { buf } = region();
    const drv = driver();
    const first = tracked(buf, 0, drv);
    drv.makeAvail(9, 8);
    popAll(first.ring);
    const second = tracked(buf, 0, drv);
    drv.makeAvail(7);
    expect(popAll(second.ring)).toEqual([9, 8, 7]);
    second.ring.pushUsed(9, 0);
    second.ring.publishUsed();
    const third = tracked(buf, 0, drv);
    expect(third.rec.resubmit).toEqual([8, 7]);
    expect(third.rec.nextCounter).toBe(3);
  });

  test('free-running indices wrap at 2^16', () => {
    const { buf } = region();
    const drv = new TestDriver(N);
    for (let i = 0; i < N; i++) drv.putChain(i, [d(0x8000 + 512 * i, 512)]);
    drv.availIdx = 0xfffe;
    drv.setAvailIdx(0xfffe);
    drv.dv.setUint16(drv.layout.used.offset + 2, 0xfffe, true);
    const { ring } = tracked(buf, 0, drv);
    drv.makeAvail(1, 2, 3);
    popAll(ring);
    ring.pushUsed(2, 0);
    ring.publishUsed();
    const again = tracked(buf, 0, drv);
    expect(drv.usedIdx()).toBe(0xffff);
    expect(again.rec.lastAvail).toBe(1); // 0xffff + 2 in flight, mod 2^16
    expect(again.rec.resubmit).toEqual([1, 3]);
  });
});

describe('hostile regions are refused, and left as they were', () => {
  const inherited = (): { buf: ArrayBuffer; v: DataView } => {
    const r = region();
    ok(recoverSplit(r.buf, 0, N, N, 0));
    const t = new SplitInflight(r.buf, 0, N, 0);
    t.fetched(1);
    t.fetched(2);
    return r;
  };
  const cases: [string, (v: DataView) => void, number, RegExp][] = [
    ['unknown version', (v) => v.setUint16(8, 2, true), 0, /version 2/],
    ['other descriptor count', (v) => v.setUint16(10, 8, true), 0, /for 8 descriptors/],
    ['flag neither 0 nor 1', (v) => v.setUint8(16 + 16 * 4, 7), 0, /flag of descriptor 4 is 7/],
    ['used index too far ahead', () => {}, N + 1, /entries past/],
    ['batch list outside the ring', (v) => v.setUint16(12, 99, true), 1, /names descriptor 99/],
    ['batch list visiting a head twice', (v) => {
      v.setUint16(12, 1, true);
      v.setUint16(16 + 16 * 1 + 6, 1, true);
    }, 2, /twice/],
    ['two heads with one stamp', (v) => v.setUint32(16 + 16 * 2 + 8, 0, true), 0, /same counter/],
    ['stamp beyond 2^53', (v) => v.setUint32(16 + 16 * 2 + 12, 0xffff_ffff, true), 0, /2\^53/],
  ];
  for (const [name, spoil, usedIdx, why] of cases) {
    test(name, () => {
      const { buf, v } = inherited();
      spoil(v);
      const before = new Uint8Array(buf.slice(0));
      const r = recoverSplit(buf, 0, N, N, usedIdx);
      expect(r).toMatch(why);
      expect(new Uint8Array(buf)).toEqual(before);
    });
  }

  test('a head in flight beyond a smaller ring', () => {
    const { buf } = inherited();
    new SplitInflight(buf, 0, N, 5).fetched(12);
    expect(recoverSplit(buf, 0, N, 8, 0)).toMatch(/descriptor 12 is in flight on a ring of 8/);
  });

  test('a ring larger than the region', () => {
    const { buf } = inherited();
    expect(recoverSplit(buf, 0, N, 2 * N, 0)).toMatch(/does not fit/);
  });
});
