// Packed virtqueue, device side: wrap counters, chains, indirect tables, event
// suppression, and hostile rings.
import { describe, expect, test } from 'vitest';
import { E } from '../../src/virtio/errno.js';
import { SEG_STRIDE } from '../../src/virtio/memory.js';
import { DEVICE, DRIVER, MEM, PackedDriver as Driver } from './helpers/packed-driver.js';
import {
  PackedRing,
  VRING_PACKED_DESC_F_AVAIL as AVAIL,
  VRING_PACKED_DESC_F_USED as USED,
  VRING_PACKED_EVENT_FLAG_DESC,
  VRING_PACKED_EVENT_FLAG_DISABLE,
  VRING_PACKED_EVENT_FLAG_ENABLE,
  checkPackedLayout,
} from '../../src/virtio/packed-ring.js';
import { BROKEN, NO_HEAD } from '../../src/virtio/split-ring.js';
import { VRING_DESC_F_INDIRECT as IND, VRING_DESC_F_NEXT as NEXT, VRING_DESC_F_WRITE as WRITE } from '../../src/virtio/constants.js';

const segs = () => new Float64Array(SEG_STRIDE * 64);

describe('packed ring', () => {
  test('pops a chain by the id in its last descriptor, maps every buffer', () => {
    const d = new Driver(8);
    const r = d.ring();
    d.add(5, [[0x1000, 16, NEXT], [0x2000, 512, NEXT | WRITE], [0x3000, 1, WRITE]]);
    const s = segs();
    expect(r.pop(s, 64)).toBe(5);
    expect(r.lastChain).toBe(3);
    expect([s[1], s[2], s[3], s[5], s[7]]).toEqual([0x1000, 16, 0, 0x2000, 1]);
    expect(r.pop(s, 64)).toBe(NO_HEAD);
  });

  test("used descriptors advance by each buffer's descriptor count, in completion order", () => {
    const d = new Driver(8);
    const r = d.ring();
    d.add(0, [[0x1000, 16, NEXT], [0x2000, 1, WRITE]]); // positions 0-1
    d.add(1, [[0x1100, 16, NEXT], [0x2100, 8, NEXT | WRITE], [0x2200, 1, WRITE]]); // 2-4
    const s = segs();
    expect([r.pop(s, 64), r.pop(s, 64)]).toEqual([0, 1]);
    r.push(1, 9); // the second buffer completes first: written at 0, next used at 3
    r.push(0, 1); // then at 3, next at 5
    expect(d.used(0)).toEqual({ id: 1, len: 9, flags: AVAIL | USED });
    expect(d.used(3)).toEqual({ id: 0, len: 1, flags: AVAIL | USED });
    expect(r.usedIdx).toBe(5 | (1 << 15));
  });

  test('wrap counters flip at the end of the ring, on both sides', () => {
    const d = new Driver(4);
    const r = d.ring();
    const s = segs();
    for (let lap = 0; lap < 3; lap++) {
      for (let i = 0; i < 2; i++) d.add(i, [[0x1000, 16, NEXT], [0x2000, 1, WRITE]]);
      expect([r.pop(s, 64), r.pop(s, 64), r.pop(s, 64)]).toEqual([0, 1, NO_HEAD]);
      r.push(0, 1);
      r.push(1, 1);
      const expectWrap = lap % 2 === 0 ? AVAIL | USED : 0;
      expect(d.used(0).flags).toBe(expectWrap);
      expect(d.used(2).flags).toBe(expectWrap);
    }
    expect(r.lastAvail).toBe(0 | 0); // three laps: wrap counter 1 -> 0 -> 1 -> 0
    expect(r.usedIdx).toBe(0);
  });

  test('resumes from vhost-user state (index | wrap << 15)', () => {
    const d = new Driver(4);
    d.pos = 2;
    d.wrap = 0;
    const r = d.ring(false, 2, 2); // next avail 2 with wrap 0, next used 2 with wrap 0
    d.add(3, [[0x1000, 16, NEXT], [0x2000, 1, WRITE]]);
    const s = segs();
    expect(r.pop(s, 64)).toBe(3);
    r.push(3, 1);
    expect(d.used(2).flags).toBe(0);
    expect(r.lastAvail).toBe(0 | (1 << 15));
  });

  test('an indirect table is walked as an array', () => {
    const d = new Driver(8);
    const t = 0x4000;
    d.write(t / 16, 0x1000, 16, 0, 0);
    d.write(t / 16 + 1, 0x2000, 4096, 0, WRITE);
    d.write(t / 16 + 2, 0x3000, 1, 0, WRITE);
    d.add(2, [[t, 48, IND]]);
    const r = d.ring();
    expect(r.pop(segs(), 64)).toBe(2);
    expect(r.lastChain).toBe(3);
    r.push(2, 4097);
    expect(r.usedIdx).toBe(1 | (1 << 15)); // an indirect buffer takes one ring slot
  });

  const hostile: [string, (d: Driver) => void, number][] = [
    ['zero-length descriptor', (d) => d.add(0, [[0x1000, 0, 0]]), -E.EINVAL],
    ['readable after writable', (d) => d.add(0, [[0x1000, 16, NEXT | WRITE], [0x2000, 16, 0]]), -E.EINVAL],
    ['address outside memory', (d) => d.add(0, [[0xf_0000_0, 16, 0]]), -E.EFAULT],
    ['indirect with NEXT', (d) => d.add(0, [[0x4000, 32, IND | NEXT], [0x2000, 1, WRITE]]), -E.EINVAL],
    ['indirect length not a multiple of 16', (d) => d.add(0, [[0x4000, 40, IND]]), -E.EINVAL],
    ['nested indirect', (d) => {
      d.write(0x4000 / 16, 0x5000, 16, 0, IND);
      d.add(0, [[0x4000, 16, IND]]);
    }, -E.EINVAL],
  ];
  for (const [name, build, want] of hostile) {
    test(`hostile: ${name} fails that request, the ring goes on`, () => {
      const d = new Driver(8);
      const r = d.ring();
      build(d);
      expect(r.pop(segs(), 64)).toBe(0);
      expect(r.lastChain).toBe(want);
      d.add(1, [[0x1000, 16, NEXT], [0x2000, 1, WRITE]]);
      expect(r.pop(segs(), 64)).toBe(1);
      expect(r.lastChain).toBe(2);
    });
  }

  test('hostile: a chain longer than the ring breaks it', () => {
    const d = new Driver(4);
    for (let i = 0; i < 4; i++) d.write(i, 0x1000, 16, 0, NEXT | AVAIL);
    const r = d.ring();
    expect(r.pop(segs(), 64)).toBe(BROKEN);
    expect(r.broken).toMatch(/longer than the ring/);
    expect(r.pop(segs(), 64)).toBe(BROKEN);
  });

  test('hostile: a buffer id beyond the ring size breaks it', () => {
    const d = new Driver(4);
    d.add(9, [[0x1000, 16, 0]]);
    const r = d.ring();
    expect(r.pop(segs(), 64)).toBe(BROKEN);
    expect(r.broken).toMatch(/buffer id 9/);
  });

  test('hostile: a chain whose next descriptor is not available breaks it', () => {
    const d = new Driver(8);
    d.write(0, 0x1000, 16, 0, NEXT | AVAIL);
    d.write(1, 0x2000, 1, 0, WRITE | USED); // wrong lap
    const r = d.ring();
    expect(r.pop(segs(), 64)).toBe(BROKEN);
  });

  test('layouts are checked', () => {
    const d = new Driver(8);
    const l = { size: 8, desc: { window: 0, offset: 0 }, driver: { window: 0, offset: DRIVER }, device: { window: 0, offset: DEVICE } };
    expect(checkPackedLayout(d.mem, l)).toBeUndefined();
    expect(checkPackedLayout(d.mem, { ...l, size: 0 })).toMatch(/1..32768/);
    expect(checkPackedLayout(d.mem, { ...l, desc: { window: 0, offset: 8 } })).toMatch(/aligned/);
    expect(checkPackedLayout(d.mem, { ...l, device: { window: 0, offset: MEM } })).toMatch(/outside/);
  });
});

describe('packed ring: event suppression', () => {
  const setDriver = (d: Driver, flags: number, offWrap = 0) => {
    d.dv.setUint16(DRIVER, offWrap, true);
    d.dv.setUint16(DRIVER + 2, flags, true);
  };
  const one = (d: Driver, r: PackedRing, id: number) => {
    d.add(id, [[0x1000, 16, NEXT], [0x2000, 1, WRITE]]);
    r.pop(segs(), 64);
    r.push(id, 1);
  };

  test('ENABLE interrupts, DISABLE does not', () => {
    const d = new Driver(8);
    const r = d.ring(false);
    setDriver(d, VRING_PACKED_EVENT_FLAG_ENABLE);
    one(d, r, 0);
    expect(r.publish()).toBe(true);
    setDriver(d, VRING_PACKED_EVENT_FLAG_DISABLE);
    one(d, r, 1);
    expect(r.publish()).toBe(false);
  });

  test('DESC with EVENT_IDX: interrupt once the used index passes the event offset, across the wrap', () => {
    const d = new Driver(8);
    const r = d.ring(true);
    setDriver(d, VRING_PACKED_EVENT_FLAG_ENABLE);
    one(d, r, 0); // used 0 -> 2
    expect(r.publish()).toBe(true); // first decision is always made
    setDriver(d, VRING_PACKED_EVENT_FLAG_DESC, 5 | (1 << 15)); // wake me when position 5 (wrap 1) is used
    one(d, r, 1); // 2 -> 4
    expect(r.publish()).toBe(false);
    one(d, r, 2); // 4 -> 6: crosses 5
    expect(r.publish()).toBe(true);
    setDriver(d, VRING_PACKED_EVENT_FLAG_DESC, 1 | (0 << 15)); // position 1 in the next lap (wrap 0)
    one(d, r, 3); // 6 -> 0, wrap flips to 0
    expect(r.publish()).toBe(false);
    one(d, r, 4); // 0 -> 2: crosses 1 in the new lap
    expect(r.publish()).toBe(true);
  });

  test('device area: DISABLE while polling, ENABLE or DESC(next avail) before sleeping', () => {
    const d = new Driver(8);
    const plain = d.ring(false);
    plain.setKicks(false);
    expect(d.dv.getUint16(DEVICE + 2, true)).toBe(VRING_PACKED_EVENT_FLAG_DISABLE);
    plain.setKicks(true);
    expect(d.dv.getUint16(DEVICE + 2, true)).toBe(VRING_PACKED_EVENT_FLAG_ENABLE);
    const ev = d.ring(true);
    d.add(0, [[0x1000, 16, 0]]);
    ev.pop(segs(), 64);
    ev.setKicks(true);
    expect(d.dv.getUint16(DEVICE + 2, true)).toBe(VRING_PACKED_EVENT_FLAG_DESC);
    expect(d.dv.getUint16(DEVICE, true)).toBe(1 | (1 << 15));
  });
});
