#!/usr/bin/env node
// Device-side cost of one virtio-blk request on a split and on a packed ring:
// the same driver (this script) makes batches of 3-descriptor chains available
// (16-byte header, 4 KiB data, 1-byte status, as Linux and libblkio lay them
// out), and only vdx's device calls are timed: pop (walk + map the chain),
// push (used entry) and publish (interrupt decision). Alternates the layouts,
// medians; "split+inflight" and "packed+inflight" keep a vhost-user in-flight
// region (what a QEMU with INFLIGHT_SHMFD gets). Needs `npm run build`.
//
//   node scripts/bench/rings.mjs [rounds=9] [batches=20000]
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { GuestMemory, SEG_STRIDE } = await import(join(REPO, 'dist/virtio/memory.js'));
const { SplitRing } = await import(join(REPO, 'dist/virtio/split-ring.js'));
const { SplitInflight, inflightSplitStride, recoverSplit } = await import(join(REPO, 'dist/virtio/inflight.js'));
const { PackedInflight, inflightPackedStride, recoverPacked } = await import(join(REPO, 'dist/virtio/inflight-packed.js'));
const { PackedRing, VRING_PACKED_DESC_F_AVAIL: AVAIL, VRING_PACKED_DESC_F_USED: USED } = await import(join(REPO, 'dist/virtio/packed-ring.js'));
const NEXT = 1;
const WRITE = 2;

const [rounds = 9, batches = 20000] = process.argv.slice(2).map(Number);
const SIZE = 256;
const BATCH = 32;
const MEM = 4 << 20;
const DATA = 1 << 20;
const CHAIN = [[0, 16, NEXT], [4096, 4096, NEXT | WRITE], [16, 1, WRITE]];

function memory() {
  const buf = new ArrayBuffer(MEM);
  return { buf, dv: new DataView(buf), mem: new GuestMemory([{ gpa: 0, uva: -1, hostAddr: 0x10_0000_0000, lenBytes: MEM }], () => buf) };
}

/** A 16-byte descriptor: addr, len, then two u16s (split: flags, next; packed: id, flags). */
function writeDesc(dv, at, addr, len, u16a, u16b) {
  dv.setUint32(at, addr, true);
  dv.setUint32(at + 4, 0, true);
  dv.setUint32(at + 8, len, true);
  dv.setUint16(at + 12, u16a, true);
  dv.setUint16(at + 14, u16b, true);
}

function splitBench(tracked) {
  const { dv, mem } = memory();
  const avail = 16 * SIZE;
  const used = 8192;
  let tracking;
  if (tracked) {
    const region = new ArrayBuffer(inflightSplitStride(SIZE));
    recoverSplit(region, 0, SIZE, SIZE, 0);
    tracking = { inflight: new SplitInflight(region, 0, SIZE, 0), resubmit: [] };
  }
  const ring = new SplitRing(mem, { size: SIZE, desc: { window: 0, offset: 0 }, avail: { window: 0, offset: avail }, used: { window: 0, offset: used } }, true, true, 0, 0, tracking);
  // Chains are fixed: head h uses descriptors 3h..3h+2 (85 chains fit in 256).
  const heads = Math.floor(SIZE / 3);
  for (let h = 0; h < heads; h++) {
    CHAIN.forEach(([off, len, flags], i) => writeDesc(dv, (3 * h + i) * 16, DATA + h * 8192 + off, len, flags, 3 * h + i + 1));
  }
  for (let h = 0; h < heads; h++) {
    const got = ring.mapChain(3 * h, new Float64Array(SEG_STRIDE * 8), 8);
    if (got !== 3) throw new Error(`split chain ${h} maps to ${got}, not 3 segments`);
  }
  let idx = 0;
  let next = 0;
  return (segs) => {
    for (let i = 0; i < BATCH; i++) {
      dv.setUint16(avail + 4 + 2 * (idx % SIZE), 3 * next, true);
      idx = (idx + 1) & 0xffff;
      next = (next + 1) % heads;
    }
    dv.setUint16(avail + 2, idx, true);
    const t = performance.now();
    for (let i = 0; i < BATCH; i++) {
      const head = ring.pop(segs, 64);
      if (ring.lastChain !== 3) throw new Error(`split chain mapped to ${ring.lastChain}`);
      ring.push(head, 4097);
    }
    ring.publish();
    return performance.now() - t;
  };
}

function packedBench(inflight) {
  const { dv, mem } = memory();
  let tracking;
  if (inflight) {
    const region = new ArrayBuffer(inflightPackedStride(SIZE));
    const fresh = ((1 << 15) | (1 << 31)) >>> 0;
    if (typeof recoverPacked(region, 0, SIZE, SIZE, () => 0, fresh) === 'string') throw new Error('packed region');
    tracking = { inflight: new PackedInflight(region, 0, SIZE, 0, []), resubmit: [] };
  }
  const ring = new PackedRing(mem, { size: SIZE, desc: { window: 0, offset: 0 }, driver: { window: 0, offset: 8192 }, device: { window: 0, offset: 8196 } }, true, true, 1 << 15, 1 << 15, tracking);
  let pos = 0;
  let wrap = 1;
  let id = 0;
  return (segs) => {
    for (let i = 0; i < BATCH; i++) {
      CHAIN.forEach(([off, len, flags], k) => {
        writeDesc(dv, pos * 16, DATA + id * 8192 + off, len, k === 2 ? id : 0, flags | (wrap ? AVAIL : USED));
        if (++pos === SIZE) {
          pos = 0;
          wrap ^= 1;
        }
      });
      id = (id + 1) % 64;
    }
    const t = performance.now();
    for (let i = 0; i < BATCH; i++) {
      const b = ring.pop(segs, 64);
      if (ring.lastChain !== 3) throw new Error(`packed chain mapped to ${ring.lastChain}`);
      ring.push(b, 4097);
    }
    ring.publish();
    return performance.now() - t;
  };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const segs = new Float64Array(SEG_STRIDE * 64);
const runs = { split: [], 'split+inflight': [], packed: [], 'packed+inflight': [] };
const benches = { split: splitBench(false), 'split+inflight': splitBench(true), packed: packedBench(false), 'packed+inflight': packedBench(true) };
for (const b of Object.values(benches)) for (let i = 0; i < batches; i++) b(segs); // warm up (JIT)
for (let r = 0; r < rounds; r++) {
  const names = Object.keys(benches);
  for (const name of r % 2 ? names.reverse() : names) {
    let ms = 0;
    for (let i = 0; i < batches; i++) ms += benches[name](segs);
    runs[name].push((ms * 1e6) / (batches * BATCH));
  }
}
const s = median(runs.split);
const t = median(runs['split+inflight']);
const p = median(runs.packed);
const pt = median(runs['packed+inflight']);
process.stdout.write(
  `device-side ns per request (pop + push + publish), medians of ${rounds}: split ${s.toFixed(1)}, split+inflight ${t.toFixed(1)} (+${(t - s).toFixed(1)}), packed ${p.toFixed(1)}, packed+inflight ${pt.toFixed(1)} (+${(pt - p).toFixed(1)}), packed/split ${(p / s).toFixed(2)}\n`,
);
process.stdout.write(`${JSON.stringify(Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, v.map((x) => +x.toFixed(1))])))}\n`);
