import { describe, expect, test } from 'vitest';
import { E } from '../../src/virtio/errno.js';
import { GuestMemory, SEG_STRIDE } from '../../src/virtio/memory.js';
import { BROKEN, NO_HEAD, SplitRing, checkSplitLayout } from '../../src/virtio/split-ring.js';
import { VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT as IND, VRING_DESC_F_NEXT as NEXT, VRING_DESC_F_WRITE as WRITE, VRING_USED_F_NO_NOTIFY } from '../../src/virtio/constants.js';
import { type Desc, TestDriver, d } from './helpers/driver.js';

const MAX = 64;
const segs = () => new Float64Array(SEG_STRIDE * MAX);

describe('split ring: chain mapping with hostile input', () => {
  const cases: [string, Desc[], number][] = [
    ['single readable', [d(0x8000, 16)], 1],
    ['read then write', [d(0x8000, 16, NEXT), d(0x9000, 512, NEXT | WRITE), d(0x9200, 1, WRITE)], 3],
    ['loop', [d(0x8000, 16, NEXT, 1), d(0x9000, 16, NEXT, 0)], -E.ELOOP],
    ['self loop', [d(0x8000, 16, NEXT, 0)], -E.ELOOP],
    ['next >= size', [d(0x8000, 16, NEXT, 99)], -E.EINVAL],
    ['zero length', [d(0x8000, 0)], -E.EINVAL],
    ['readable after writable', [d(0x8000, 16, NEXT | WRITE), d(0x9000, 16)], -E.EINVAL],
    ['address outside memory', [d(0x10_0000, 16)], -E.EFAULT],
    ['range running off the end', [d(0xf_fff0, 32)], -E.EFAULT],
    ['address above 2^53', [d(2 ** 60, 16)], -E.EFAULT],
  ];
  for (const [name, chain, want] of cases) {
    test(name, () => {
      const drv = new TestDriver(16);
      drv.putChain(0, chain);
      expect(drv.ring().mapChain(0, segs(), MAX)).toBe(want);
    });
  }

  test('a chain longer than the queue is a loop, even without revisiting', () => {
    const drv = new TestDriver(4);
    // 4 descriptors all chained in a cycle 0->1->2->3->0
    drv.putChain(0, [d(0x8000, 1, NEXT, 1), d(0x8000, 1, NEXT, 2), d(0x8000, 1, NEXT, 3), d(0x8000, 1, NEXT, 0)]);
    expect(drv.ring().mapChain(0, segs(), MAX)).toBe(-E.ELOOP);
  });

  test('too many segments', () => {
    const drv = new TestDriver(16);
    drv.putChain(0, Array.from({ length: 8 }, (_, i) => d(0x8000 + i * 64, 16, i < 7 ? NEXT : 0)));
    expect(drv.ring().mapChain(0, segs(), 4)).toBe(-E.E2BIG);
  });

  test('indirect table is followed and its segments are returned', () => {
    const drv = new TestDriver(16);
    const t = drv.putTable([d(0x8000, 16, NEXT), d(0x9000, 4096, NEXT | WRITE), d(0xa000, 1, WRITE)]);
    drv.putChain(0, [d(t, 48, IND)]);
    const s = segs();
    expect(drv.ring().mapChain(0, s, MAX)).toBe(3);
    expect([s[1], s[2], s[3]]).toEqual([0x8000, 16, 0]);
    expect([s[5], s[6], s[7]]).toEqual([0x9000, 4096, 1]);
  });

  const indirectCases: [string, (t: number) => Desc[], Desc[], number][] = [
    ['len % 16 != 0', (t) => [d(t, 40, IND)], [d(0x8000, 16, NEXT), d(0x9000, 1, WRITE)], -E.EINVAL],
    ['zero-length table', (t) => [d(t, 0, IND)], [d(0x8000, 16)], -E.EINVAL],
    ['INDIRECT with NEXT', (t) => [d(t, 32, IND | NEXT, 1), d(0x9000, 1, WRITE)], [d(0x8000, 16, NEXT), d(0x9000, 1, WRITE)], -E.EINVAL],
    ['nested indirect', (t) => [d(t, 16, IND)], [d(0x8000, 16, IND)], -E.EINVAL],
    ['loop inside the table', (t) => [d(t, 32, IND)], [d(0x8000, 16, NEXT, 1), d(0x9000, 16, NEXT, 0)], -E.ELOOP],
    ['next beyond the table', (t) => [d(t, 32, IND)], [d(0x8000, 16, NEXT, 5), d(0x9000, 1, WRITE)], -E.EINVAL],
    ['table outside memory', () => [d(0xff_0000_0000, 32, IND)], [], -E.EFAULT],
    ['table larger than MAX_INDIRECT', (t) => [d(t, 16 * 1025, IND)], [d(0x8000, 16)], -E.EINVAL],
  ];
  for (const [name, outer, inner, want] of indirectCases) {
    test(`indirect: ${name}`, () => {
      const drv = new TestDriver(16);
      const t = inner.length ? drv.putTable(inner) : 0;
      drv.putChain(0, outer(t));
      expect(drv.ring().mapChain(0, segs(), MAX)).toBe(want);
    });
  }

  test('indirect not negotiated', () => {
    const drv = new TestDriver(16);
    const t = drv.putTable([d(0x8000, 16)]);
    drv.putChain(0, [d(t, 16, IND)]);
    expect(drv.ring(false, false).mapChain(0, segs(), MAX)).toBe(-E.EINVAL);
  });

  test('a buffer spanning two regions becomes two segments', () => {
    // Guest-contiguous, host-discontiguous: gpa 0..64K and 64K..128K live in two mappings.
    const low = new ArrayBuffer(0x10000);
    const high = new ArrayBuffer(0x10000);
    const mem = new GuestMemory(
      [
        { gpa: 0, uva: 0x7000_0000, hostAddr: 0x1000_0000, lenBytes: 0x10000 },
        { gpa: 0x10000, uva: 0x9000_0000, hostAddr: 0x5000_0000, lenBytes: 0x10000 },
      ],
      (addr) => (addr === 0x1000_0000 ? low : high),
    );
    const drv = new TestDriver(16, 0x10000, 0x1000_0000, low);
    drv.putChain(0, [d(0xff00, 0x200)]);
    const s = segs();
    expect(new SplitRing(mem, drv.layout, false, true).mapChain(0, s, MAX)).toBe(2);
    expect(Array.from(s.subarray(0, 8))).toEqual([0, 0xff00, 0x100, 0, 1, 0, 0x100, 0]);
    expect(mem.windows[1]!.hostAddr + s[5]!).toBe(0x5000_0000);
  });
});

describe('split ring: avail and used indices', () => {
  test('pops heads in order and reports empty', () => {
    const drv = new TestDriver(8);
    const r = drv.ring();
    drv.makeAvail(3, 5);
    expect(r.nextAvail()).toBe(3);
    expect(r.nextAvail()).toBe(5);
    expect(r.nextAvail()).toBe(NO_HEAD);
  });

  test('16-bit indices wrap around', () => {
    const drv = new TestDriver(8);
    drv.availIdx = 0xfffe;
    const r = drv.ring(false, true, 0xfffe);
    drv.makeAvail(1, 2, 3, 4);
    expect(drv.availIdx).toBe(2);
    expect([r.nextAvail(), r.nextAvail(), r.nextAvail(), r.nextAvail(), r.nextAvail()]).toEqual([1, 2, 3, 4, NO_HEAD]);
    for (let i = 0; i < 4; i++) r.pushUsed(i, 1);
    r.publishUsed();
    expect(drv.usedIdx()).toBe(2);
    expect(drv.usedEntry((0xfffe + 3) & 0xffff)).toEqual({ id: 3, len: 1 });
  });

  test('avail index jumping more than the ring size breaks the ring for good', () => {
    const drv = new TestDriver(8);
    const r = drv.ring();
    drv.setAvailIdx(9);
    expect(r.nextAvail()).toBe(BROKEN);
    expect(r.broken).toMatch(/9 entries ahead/);
    drv.setAvailIdx(1);
    expect(r.nextAvail()).toBe(BROKEN);
  });

  test('heads made available while a batch is popped are taken after it', () => {
    const drv = new TestDriver(8);
    const r = drv.ring();
    drv.makeAvail(1, 2);
    expect(r.nextAvail()).toBe(1);
    drv.makeAvail(3);
    expect(r.availPending()).toBe(true);
    expect([r.nextAvail(), r.nextAvail(), r.nextAvail()]).toEqual([2, 3, NO_HEAD]);
    expect(r.availPending()).toBe(false);
  });

  test('the avail index is read once per batch, and a driver moving it back is caught at the next read', () => {
    const drv = new TestDriver(8);
    const r = drv.ring();
    drv.makeAvail(1, 2, 3);
    expect(r.nextAvail()).toBe(1);
    // The driver takes back what it published: the heads counted by the index
    // already read are still popped (each checked as it is taken), and the next
    // read of the index, now behind lastAvail, breaks the ring.
    drv.setAvailIdx(1);
    expect([r.nextAvail(), r.nextAvail()]).toEqual([2, 3]);
    expect(r.nextAvail()).toBe(BROKEN);
    expect(r.broken).toMatch(/entries ahead/);
  });

  test('a head beyond the ring size breaks the ring', () => {
    const drv = new TestDriver(8);
    const r = drv.ring();
    drv.makeAvail(8);
    expect(r.nextAvail()).toBe(BROKEN);
    expect(r.broken).toMatch(/descriptor 8/);
  });

  test('bad layouts are refused before any view is made', () => {
    const drv = new TestDriver(16);
    expect(checkSplitLayout(drv.mem, { ...drv.layout, size: 12 })).toMatch(/power of two/);
    expect(checkSplitLayout(drv.mem, { ...drv.layout, avail: { window: 0, offset: 0x101 } })).toMatch(/aligned/);
    expect(checkSplitLayout(drv.mem, { ...drv.layout, used: { window: 0, offset: (1 << 20) - 8 } })).toMatch(/outside/);
    expect(checkSplitLayout(drv.mem, { ...drv.layout, desc: { window: 3, offset: 0 } })).toMatch(/outside/);
    expect(() => new SplitRing(drv.mem, { ...drv.layout, size: 0 }, false, true)).toThrow(RangeError);
  });
});

describe('split ring: notification decisions', () => {
  test('without EVENT_IDX: interrupt unless NO_INTERRUPT', () => {
    const drv = new TestDriver(8);
    const r = drv.ring(false);
    r.pushUsed(0, 1);
    expect(r.publishUsed()).toBe(true);
    drv.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
    r.pushUsed(1, 1);
    expect(r.publishUsed()).toBe(false);
    expect(r.publishUsed()).toBe(false); // nothing new
  });

  test('with EVENT_IDX: vring_need_event(used_event, new, old)', () => {
    const drv = new TestDriver(8);
    const r = drv.ring(true);
    drv.setUsedEvent(0); // driver wants to hear once entry 0 is used
    r.pushUsed(0, 1);
    expect(r.publishUsed()).toBe(true); // 0 -> 1 crosses 0
    r.pushUsed(1, 1);
    expect(r.publishUsed()).toBe(false); // 1 -> 2 does not cross 0 again
    drv.setUsedEvent(4);
    r.pushUsed(2, 1);
    r.pushUsed(3, 1);
    expect(r.publishUsed()).toBe(false); // 2 -> 4 stops short of 4
    r.pushUsed(4, 1);
    expect(r.publishUsed()).toBe(true); // 4 -> 5 crosses 4
  });

  test('EVENT_IDX across the 16-bit wrap', () => {
    const drv = new TestDriver(8);
    const r = new SplitRing(drv.mem, drv.layout, true, true, 0xfffe, 0xfffe);
    drv.setUsedEvent(0xffff);
    r.pushUsed(0, 1);
    r.pushUsed(1, 1);
    r.pushUsed(2, 1);
    expect(r.publishUsed()).toBe(true); // 0xfffe -> 1 crosses 0xffff
  });

  test('kick suppression: NO_NOTIFY flag, or avail_event with EVENT_IDX', () => {
    const drv = new TestDriver(8);
    const plain = drv.ring(false);
    plain.setKicks(false);
    expect(drv.usedFlags() & VRING_USED_F_NO_NOTIFY).toBe(1);
    plain.setKicks(true);
    expect(drv.usedFlags() & VRING_USED_F_NO_NOTIFY).toBe(0);
    const ev = drv.ring(true);
    drv.makeAvail(0, 1, 2);
    ev.nextAvail();
    ev.nextAvail();
    ev.setKicks(true);
    expect(drv.availEvent()).toBe(2);
    expect(ev.availPending()).toBe(true);
  });
});
