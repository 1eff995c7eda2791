// The vhost-user in-flight region for packed rings: what the ring records on
// the hot path, the recovery decision after a crash at each point of a
// request's life (including inside a completion), a randomised driver that
// checks every buffer comes back exactly once across many crashes, and
// hostile regions.
import { describe, expect, test } from 'vitest';
import { SEG_STRIDE } from '../../src/virtio/memory.js';
import { inflightPackedStride, PackedInflight, recoverPacked, type PackedRecovery } from '../../src/virtio/inflight-packed.js';
import { VRING_PACKED_DESC_F_AVAIL as AVAIL, VRING_PACKED_DESC_F_USED as USED, type PackedRing } from '../../src/virtio/packed-ring.js';
import { NO_HEAD } from '../../src/virtio/split-ring.js';
import { VRING_DESC_F_NEXT as NEXT, VRING_DESC_F_WRITE as WRITE } from '../../src/virtio/constants.js';
import { PackedDriver } from './helpers/packed-driver.js';

const N = 8;
const W = 1 << 15;
/** SET_VRING_BASE of a fresh packed queue: avail 0 and used 0, both with wrap counter 1 */
const FRESH = (W | (W << 16)) >>> 0;
const segs = new Float64Array(SEG_STRIDE * 16);

const ok = (r: PackedRecovery | string): PackedRecovery => {
  if (typeof r === 'string') throw new Error(r);
  return r;
};

class Daemon {
  readonly ring: PackedRing;
  readonly t: PackedInflight;
  readonly rec: PackedRecovery;
  constructor(
    readonly buf: ArrayBuffer,
    readonly d: PackedDriver,
    base = FRESH,
  ) {
    this.rec = ok(recoverPacked(buf, 0, N, N, (pos) => d.dv.getUint16(pos * 16 + 14, true), base));
    this.t = new PackedInflight(buf, 0, N, this.rec.nextCounter, this.rec.resubmit);
    this.ring = d.ring(false, this.rec.availState, this.rec.usedState, { inflight: this.t, resubmit: this.rec.resubmit });
  }
  /** pop everything: [id, gpa of its first segment] */
  popAll(): [number, number][] {
    const out: [number, number][] = [];
    for (let id = this.ring.pop(segs, 16); id !== NO_HEAD; id = this.ring.pop(segs, 16)) out.push([id, segs[1]!]);
    return out;
  }
}

/** Buffer `id`: a header, `n - 2` data descriptors and a status byte; its header is at 0x10000 + 0x100 * tag. */
function request(d: PackedDriver, id: number, tag: number, n = 3): void {
  const chain: [number, number, number][] = [[0x10000 + 0x100 * tag, 16, NEXT]];
  for (let i = 0; i < n - 2; i++) chain.push([0x40000 + 0x1000 * tag, 512, NEXT | WRITE]);
  if (n > 1) chain.push([0x80000 + tag, 1, WRITE]);
  chain[chain.length - 1]![2] &= ~NEXT;
  d.add(id, chain);
}
const hdr = (tag: number) => 0x10000 + 0x100 * tag;

describe('packed in-flight region layout', () => {
  test('stride: 64-byte aligned 32-byte header + 32 per descriptor', () => {
    expect(inflightPackedStride(128)).toBe(4160);
    expect(inflightPackedStride(256)).toBe(8256);
  });

  test('fresh region: header from SET_VRING_BASE, nothing resubmitted', () => {
    const buf = new ArrayBuffer(2 * inflightPackedStride(N));
    new Uint8Array(buf, 32, 64).fill(0xff); // garbage in a never-used region is ignored
    const base = (5 | ((3 | W) << 16)) >>> 0; // avail 5 wrap 0, used 3 wrap 1
    const r = ok(recoverPacked(buf, 0, N, N, () => 0, base));
    expect(r).toEqual({ availState: 5, usedState: 3 | W, resubmit: [], nextCounter: 0, inherited: false });
    const v = new DataView(buf);
    expect([v.getUint16(8, true), v.getUint16(10, true), v.getUint16(16, true), v.getUint16(18, true), v.getUint8(32)]).toEqual([1, N, 3 | W, 3 | W, 0]);
  });

  test('a fetched chain is a copy of its ring descriptors; completion frees it and moves the used position', () => {
    const buf = new ArrayBuffer(inflightPackedStride(N));
    const d = new PackedDriver(N);
    const dm = new Daemon(buf, d);
    request(d, 6, 1);
    expect(dm.popAll()).toEqual([[6, hdr(1)]]);
    const v = new DataView(buf);
    // entry 0 is the head (pool entries are handed out from 0 up)
    expect(v.getUint8(32)).toBe(1);
    expect(v.getUint16(32 + 6, true)).toBe(3); // num
    const last = v.getUint16(32 + 4, true);
    expect(v.getUint16(32 + 32 * last + 16, true)).toBe(6); // id in the last copy
    expect(v.getUint32(32 + 24, true)).toBe(hdr(1)); // addr of the first
    expect(v.getUint16(32 + 18, true) & NEXT).toBe(NEXT);
    dm.ring.push(6, 1);
    expect(v.getUint8(32)).toBe(0);
    expect([v.getUint16(16, true), v.getUint16(18, true)]).toEqual([3 | W, 3 | W]);
    expect(d.used(0)).toEqual({ id: 6, len: 1, flags: AVAIL | USED });
  });
});

describe('packed recovery after a crash', () => {
  test('nothing completed: every chain runs again in fetch order, from its copy, then the ring where it left off', () => {
    const buf = new ArrayBuffer(inflightPackedStride(N));
    const d = new PackedDriver(N);
    const first = new Daemon(buf, d);
    request(d, 4, 0, 2);
    request(d, 1, 1, 3);
    request(d, 7, 2, 1);
    expect(first.popAll().map(([id]) => id)).toEqual([4, 1, 7]);
    // -- killed; the driver adds one more; QEMU's packed base is stale (the fresh one).
    request(d, 2, 3, 2);
    const again = new Daemon(buf, d);
    expect(again.rec.inherited).toBe(true);
    expect(again.rec.availState).toBe(6 | W);
    expect(again.rec.usedState).toBe(0 | W);
    expect(again.popAll()).toEqual([
      [4, hdr(0)],
      [1, hdr(1)],
      [7, hdr(2)],
      [2, hdr(3)],
    ]);
  });

  test('completed out of order: a used descriptor overwrote an in-flight one, which still runs again from its copy', () => {
    const buf = new ArrayBuffer(inflightPackedStride(N));
    const d = new PackedDriver(N);
    const first = new Daemon(buf, d);
    request(d, 0, 0); // slots 0-2
    request(d, 1, 1); // slots 3-5
    first.popAll();
    first.ring.push(1, 1); // written at slot 0, over buffer 0's header
    expect(d.used(0).id).toBe(1);
    const again = new Daemon(buf, d);
    expect(again.rec.usedState).toBe(3 | W);
    expect(again.rec.availState).toBe(6 | W);
    expect(again.popAll()).toEqual([[0, hdr(0)]]);
    again.ring.push(0, 1);
    expect(d.used(3)).toEqual({ id: 0, len: 1, flags: AVAIL | USED });
  });

  test('killed inside a completion before the used descriptor was written: rolled back, the buffer runs again', () => {
    const buf = new ArrayBuffer(inflightPackedStride(N));
    const d = new PackedDriver(N);
    const first = new Daemon(buf, d);
    request(d, 3, 0);
    first.popAll();
    first.t.completing(3, 3, 1);
    const again = new Daemon(buf, d);
    expect(again.rec.usedState).toBe(0 | W);
    expect(again.popAll()).toEqual([[3, hdr(0)]]);
  });

  for (const [name, after] of [
    ['the used descriptor was written, its entry still flagged', (_first: Daemon, _d: PackedDriver) => {}],
    ['the driver already made the slot available again for its next lap', (_first: Daemon, d: PackedDriver) => d.write(0, 0x9000, 16, 5, USED)],
    ['its entry cleared, the used position not yet recorded', (first: Daemon) => {
      const v = new DataView(first.buf);
      first.t.completed(3);
      v.setUint16(18, 0 | W, true);
    }],
  ] as const) {
    test(`killed inside a completion after ${name}: finished, nothing runs twice`, () => {
      const buf = new ArrayBuffer(inflightPackedStride(N));
      const d = new PackedDriver(N);
      const first = new Daemon(buf, d);
      request(d, 3, 0);
      request(d, 4, 1);
      first.popAll();
      first.t.completing(3, 3, 1);
      d.write(0, 0, 1, 3, AVAIL | USED); // the used descriptor, as push writes it
      after(first, d);
      const again = new Daemon(buf, d);
      expect(again.rec.usedState).toBe(3 | W);
      expect(again.rec.availState).toBe(6 | W);
      expect(again.popAll()).toEqual([[4, hdr(1)]]);
      const v = new DataView(buf);
      expect([v.getUint16(16, true), v.getUint16(18, true)]).toEqual([3 | W, 3 | W]);
    });
  }

  test('a resubmitted chain keeps its stamp and its entries: after a second crash the order is still the first fetch order', () => {
    const buf = new ArrayBuffer(inflightPackedStride(N));
    const d = new PackedDriver(N);
    const first = new Daemon(buf, d);
    request(d, 0, 0, 2);
    request(d, 1, 1, 2);
    first.popAll();
    const second = new Daemon(buf, d);
    request(d, 2, 2, 2);
    expect(second.popAll().map(([id]) => id)).toEqual([0, 1, 2]);
    second.ring.push(1, 1);
    const third = new Daemon(buf, d);
    expect(third.popAll()).toEqual([
      [0, hdr(0)],
      [2, hdr(2)],
    ]);
  });

  test('chains across the end of the ring: positions and wrap counters come back right', () => {
    const buf = new ArrayBuffer(inflightPackedStride(N));
    const d = new PackedDriver(N);
    const first = new Daemon(buf, d);
    request(d, 0, 0); // 0-2
    request(d, 1, 1); // 3-5
    first.popAll();
    first.ring.push(0, 1); // used 0-2
    first.ring.push(1, 1); // used 3-5
    request(d, 2, 2); // 6, 7, 0 (wrap 0)
    request(d, 3, 3, 2); // 1-2
    first.popAll();
    first.ring.push(3, 1); // used at 6, next used 8 -> 0 with wrap 0
    const again = new Daemon(buf, d);
    expect(again.rec.usedState).toBe(0);
    expect(again.rec.availState).toBe(3);
    expect(again.popAll()).toEqual([[2, hdr(2)]]);
    again.ring.push(2, 1);
    expect(d.used(0)).toEqual({ id: 2, len: 1, flags: 0 });
  });
});

describe('packed: a randomised driver across many crashes gets every buffer back exactly once', () => {
  test('1 000 requests, crashes between operations and inside completions', () => {
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const buf = new ArrayBuffer(inflightPackedStride(N));
    const d = new PackedDriver(N);
    let dm = new Daemon(buf, d);
    // driver side
    const outstanding = new Map<number, { tag: number; n: number }>();
    let freeDescs = N;
    let usedPos = 0;
    let usedWrap = 1;
    let issued = 0;
    let returned = 0;
    let crashes = 0;
    const seenTags = new Set<number>();
    const consume = () => {
      for (;;) {
        const u = d.used(usedPos);
        const done = ((u.flags & AVAIL) !== 0) === (usedWrap === 1) && ((u.flags & USED) !== 0) === (usedWrap === 1);
        if (!done) return;
        const o = outstanding.get(u.id);
        if (!o) throw new Error(`buffer ${u.id} came back while not outstanding`);
        if (u.len !== o.tag) throw new Error(`buffer ${u.id} came back for request ${u.len}, expected ${o.tag}`);
        if (seenTags.has(o.tag)) throw new Error(`request ${o.tag} came back twice`);
        seenTags.add(o.tag);
        outstanding.delete(u.id);
        freeDescs += o.n;
        returned++;
        usedPos += o.n;
        if (usedPos >= N) {
          usedPos -= N;
          usedWrap ^= 1;
        }
      }
    };
    // device side: what this daemon popped and has not pushed
    let popped: { id: number; tag: number }[] = [];
    const TOTAL = 1000;
    // Bounded: a lost buffer would otherwise keep the loop waiting for it.
    for (let step = 0; returned < TOTAL && step < 100_000; step++) {
      const op = rnd(100);
      if (op < 30 && issued < TOTAL) {
        const n = 1 + rnd(3);
        if (freeDescs >= n) {
          const free = [...Array(N).keys()].filter((i) => !outstanding.has(i));
          const id = free[rnd(free.length)]!;
          const tag = issued++;
          outstanding.set(id, { tag, n });
          freeDescs -= n;
          request(d, id, tag, n);
        }
      } else if (op < 55) {
        const id = dm.ring.pop(segs, 16);
        if (id >= 0) popped.push({ id, tag: (segs[1]! - 0x10000) / 0x100 });
      } else if (op < 85 && popped.length > 0) {
        const [p] = popped.splice(rnd(popped.length), 1);
        dm.ring.push(p!.id, p!.tag);
      } else if (op < 90) {
        consume();
      } else if (op < 95) {
        crashes++;
        if (popped.length > 0 && rnd(2) === 0) {
          // inside a completion: stop after one of its steps
          const p = popped[rnd(popped.length)]!;
          const { pos, wrap } = { pos: dm.ring.usedIdx & 0x7fff, wrap: dm.ring.usedIdx >>> 15 };
          const n = outstanding.get(p.id)!.n;
          const next = (pos + n) % N;
          dm.t.completing(p.id, next, pos + n >= N ? wrap ^ 1 : wrap);
          const step = rnd(3);
          if (step >= 1) d.write(pos, 0, p.tag, p.id, wrap ? AVAIL | USED : 0);
          if (step >= 2) {
            const v = new DataView(buf);
            const old = v.getUint16(18, true);
            dm.t.completed(p.id);
            v.setUint16(18, old, true);
          }
          if (step >= 1 && rnd(2) === 0) consume();
        }
        dm = new Daemon(buf, d);
        popped = [];
      } else {
        consume();
      }
      if (issued === TOTAL && rnd(10) === 0) {
        // drain
        for (let id = dm.ring.pop(segs, 16); id >= 0; id = dm.ring.pop(segs, 16)) popped.push({ id, tag: (segs[1]! - 0x10000) / 0x100 });
        for (const p of popped) dm.ring.push(p.id, p.tag);
        popped = [];
        consume();
      }
      expect(dm.ring.broken).toBeUndefined();
    }
    expect(outstanding.size).toBe(0);
    expect(seenTags.size).toBe(TOTAL);
    expect(crashes).toBeGreaterThan(50);
  });
});

describe('hostile packed regions are refused, and left as they were', () => {
  /** A region with buffers 0 (3 descriptors) and 1 (2) in flight, after one completion. */
  function crafted(): { buf: ArrayBuffer; v: DataView; d: PackedDriver } {
    const buf = new ArrayBuffer(inflightPackedStride(N));
    const d = new PackedDriver(N);
    const dm = new Daemon(buf, d);
    request(d, 5, 9, 1);
    request(d, 0, 0, 3);
    request(d, 1, 1, 2);
    dm.popAll();
    dm.ring.push(5, 1);
    return { buf, v: new DataView(buf), d };
  }
  const headOf = (v: DataView, id: number) => {
    for (let e = 0; e < N; e++) if (v.getUint8(32 + 32 * e) === 1 && v.getUint16(32 + 32 * v.getUint16(32 + 32 * e + 4, true) + 16, true) === id) return e;
    throw new Error('no such chain');
  };
  const cases: [string, (v: DataView) => void, RegExp][] = [
    ['another version', (v) => v.setUint16(8, 7, true), /version 7/],
    ['another queue size', (v) => v.setUint16(10, 16, true), /16 descriptors/],
    ['an in-flight flag that is not 0 or 1', (v) => v.setUint8(32 + 32 * headOf(v, 0), 2), /flag .* is 2/],
    ['a chain of no descriptors', (v) => v.setUint16(32 + 32 * headOf(v, 0) + 6, 0, true), /chain of 0/],
    ['a chain longer than the ring', (v) => v.setUint16(32 + 32 * headOf(v, 0) + 6, N + 1, true), /chain of 9/],
    ['a chain link out of the pool', (v) => v.setUint16(32 + 32 * headOf(v, 0) + 2, 200, true), /links to entry 200/],
    ['two chains sharing an entry', (v) => v.setUint16(32 + 32 * headOf(v, 1) + 2, headOf(v, 0), true), /overlap/],
    ['a chain that does not end at its last', (v) => v.setUint16(32 + 32 * headOf(v, 0) + 4, headOf(v, 0), true), /does not end/],
    ['a buffer id beyond the ring', (v) => v.setUint16(32 + 32 * v.getUint16(32 + 32 * headOf(v, 0) + 4, true) + 16, 99, true), /buffer id 99/],
    ['one buffer id in flight twice', (v) => v.setUint16(32 + 32 * v.getUint16(32 + 32 * headOf(v, 1) + 4, true) + 16, 0, true), /in flight twice/],
    ['two chains with one counter', (v) => v.setUint32(32 + 32 * headOf(v, 1) + 8, v.getUint32(32 + 32 * headOf(v, 0) + 8, true), true), /same counter/],
    ['a used position outside the ring', (v) => v.setUint16(18, N | W, true), /outside a ring/],
    ['a pending used position behind the recorded one', (v) => v.setUint16(16, 0 | W, true), /not ahead/],
  ];
  for (const [name, spoil, message] of cases) {
    test(name, () => {
      const { buf, v, d } = crafted();
      spoil(v);
      const before = new Uint8Array(buf.slice(0));
      const r = recoverPacked(buf, 0, N, N, (pos) => d.dv.getUint16(pos * 16 + 14, true), FRESH);
      expect(r).toMatch(message);
      expect(new Uint8Array(buf)).toEqual(before);
    });
  }

  test('a front-end that rewrites the region under a running ring cannot corrupt the pool: the ring reads its own copy', () => {
    const buf = new ArrayBuffer(inflightPackedStride(N));
    const d = new PackedDriver(N);
    const dm = new Daemon(buf, d);
    for (let lap = 0; lap < 6; lap++) {
      request(d, 1, lap, 3);
      expect(dm.popAll()).toEqual([[1, hdr(lap)]]);
      // the chain was recorded whole, in entries of the pool
      const v = new DataView(buf);
      const heads = [...Array(N).keys()].filter((e) => v.getUint8(32 + 32 * e) === 1);
      expect(heads.length).toBe(1);
      expect(v.getUint16(32 + 32 * heads[0]! + 6, true)).toBe(3);
      new Uint8Array(buf, 32).fill(0xab); // every entry's shape scribbled over
      dm.ring.push(1, 1);
      expect(dm.ring.broken).toBeUndefined();
    }
  });

  test('a region rewritten between its check and the ring that inherits it is refused', () => {
    const { buf, d } = crafted();
    const rec = ok(recoverPacked(buf, 0, N, N, (pos) => d.dv.getUint16(pos * 16 + 14, true), FRESH));
    const v = new DataView(buf);
    v.setUint16(32 + 32 * rec.resubmit[0]! + 6, 200, true);
    expect(() => new PackedInflight(buf, 0, N, rec.nextCounter, rec.resubmit)).toThrow(/changed after it was checked: entry \d+ holds a chain of 200/);
  });

  test('a ring larger than the region, and a used descriptor whose span is not its chain', () => {
    const { buf, d } = crafted();
    expect(recoverPacked(buf, 0, N, 2 * N, () => 0, FRESH)).toMatch(/does not fit/);
    const v = new DataView(buf);
    const e = headOf(v, 0);
    // pending completion of buffer 0 (3 descriptors) recorded as spanning 2, its used descriptor written
    v.setUint16(22, e, true);
    v.setUint16(16, 3 | W, true);
    d.write(1, 0, 1, 0, AVAIL | USED);
    expect(recoverPacked(buf, 0, N, N, (pos) => d.dv.getUint16(pos * 16 + 14, true), FRESH)).toMatch(/spans 2 descriptors, its chain .* 3/);
  });
});
