#!/usr/bin/env node
// Device-side cost of one virtio-blk request through the whole engine
// (BlkQueue: pop, parse, bdev submit, completion, status, used entry, publish)
// on a split ring, with a channel that completes everything at its next
// poll() and touches no data. With --base DIR, the same run against another
// build's dist/ (e.g. the committed tree, built in a temp dir), alternating
// the two, to A/B a change to the engine. Needs `npm run build`.
//
//   node scripts/bench/blk-queue.mjs [--dist DIR] [--base DIR] [--private] [--batch N] [--rounds N] [--batches N]
//
// --dist: the build to measure (default: this checkout's dist/); --private:
// let the queue count into its own buffer instead of a SharedArrayBuffer.
// A/B against the committed engine without touching the work tree:
//   mkdir /tmp/base && git archive HEAD src tsconfig.json package.json | tar -x -C /tmp/base
//   ln -s $PWD/node_modules /tmp/base/ && (cd /tmp/base && npx tsc -p tsconfig.json)
//   node scripts/bench/blk-queue.mjs --base /tmp/base/dist
//
// Each timed step makes `batch` requests available, then poll(), channel
// poll(), flush(), the order of a reactor pass. Medians over rounds, ns/request.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values: a } = parseArgs({
  options: {
    dist: { type: 'string', default: join(REPO, 'dist') },
    base: { type: 'string' },
    private: { type: 'boolean', default: false },
    batch: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '9' },
    batches: { type: 'string', default: '20000' },
  },
});
const BATCH = Number(a.batch);
const ROUNDS = Number(a.rounds);
const BATCHES = Number(a.batches);
const SIZE = 256;
const MEM = 4 << 20;
const DATA = 1 << 20;
const NEXT = 1;
const WRITE = 2;

async function load(dist) {
  const { GuestMemory } = await import(join(dist, 'virtio/memory.js'));
  const { SplitRing } = await import(join(dist, 'virtio/split-ring.js'));
  const { BlkQueue } = await import(join(dist, 'virtio/blk.js'));
  return { GuestMemory, SplitRing, BlkQueue };
}

/** Completes at poll(); no allocation per I/O. */
class NullChannel {
  notifyFd = -1;
  pending = new Array(SIZE).fill(null);
  n = 0;
  submit(io) {
    this.pending[this.n++] = io;
    return 0;
  }
  poll() {
    const n = this.n;
    for (let i = 0; i < n; i++) {
      const io = this.pending[i];
      this.pending[i] = null;
      io.status = 0;
      io.done(io);
    }
    this.n = 0;
    return n;
  }
  kernelInflight() {
    return 0;
  }
  inflight() {
    return this.n;
  }
  clearNotify() {}
  close() {}
}

function writeDesc(dv, at, addr, len, flags, next) {
  dv.setUint32(at, addr, true);
  dv.setUint32(at + 4, 0, true);
  dv.setUint32(at + 8, len, true);
  dv.setUint16(at + 12, flags, true);
  dv.setUint16(at + 14, next, true);
}

function setup(m) {
  const buf = new ArrayBuffer(MEM);
  const dv = new DataView(buf);
  const mem = new m.GuestMemory([{ gpa: 0, uva: -1, hostAddr: 0x10_0000_0000, lenBytes: MEM }], () => buf);
  const avail = 16 * SIZE;
  const used = 8192;
  // A polling driver (VRING_AVAIL_F_NO_INTERRUPT): one that waits for interrupts gets smaller passes (blk.ts WAITING_BUDGET).
  dv.setUint16(avail, 1, true);
  const ring = new m.SplitRing(mem, { size: SIZE, desc: { window: 0, offset: 0 }, avail: { window: 0, offset: avail }, used: { window: 0, offset: used } }, false, true);
  const heads = Math.floor(SIZE / 3);
  for (let h = 0; h < heads; h++) {
    const base = DATA + h * 8192;
    dv.setUint32(base, 0, true); // VIRTIO_BLK_T_IN, sector h*8
    dv.setUint32(base + 8, h * 8, true);
    writeDesc(dv, (3 * h) * 16, base, 16, NEXT, 3 * h + 1);
    writeDesc(dv, (3 * h + 1) * 16, base + 4096, 4096, NEXT | WRITE, 3 * h + 2);
    writeDesc(dv, (3 * h + 2) * 16, base + 16, 1, WRITE, 0);
  }
  const params = {
    sizeBytes: 1 << 30, blockSize: 512, readonly: false, discard: true, writeZeroes: true,
    maxDiscardSectors: 2048, maxWriteZeroesSectors: 2048, maxDiscardSeg: 1, maxWriteZeroesSeg: 1, serial: 'bench',
  };
  const ch = new NullChannel();
  // The sixth argument (counters) is ignored by an engine without counters.
  const opts = a.private ? {} : { counters: new SharedArrayBuffer(512) };
  const q = new m.BlkQueue(ring, mem, ch, params, { broken: (w) => { throw new Error(w); } }, opts);
  if (BATCH > heads) throw new Error(`batch ${BATCH} > ${heads} chains`);
  let idx = 0;
  let next = 0;
  return () => {
    for (let i = 0; i < BATCH; i++) {
      dv.setUint16(avail + 4 + 2 * (idx % SIZE), 3 * next, true);
      idx = (idx + 1) & 0xffff;
      next = (next + 1) % heads;
    }
    dv.setUint16(avail + 2, idx, true);
    const t = performance.now();
    const got = q.poll();
    ch.poll();
    q.flush();
    const dt = performance.now() - t;
    if (got !== BATCH || q.inflight() !== 0) throw new Error(`popped ${got} of ${BATCH}, ${q.inflight()} in flight`);
    return dt;
  };
}

function round(step) {
  let ms = 0;
  for (let b = 0; b < BATCHES; b++) ms += step();
  return (ms * 1e6) / (BATCHES * BATCH);
}

const median = (xs) => [...xs].sort((x, y) => x - y)[xs.length >> 1];

const runs = [['this', setup(await load(resolve(a.dist)))]];
if (a.base) runs.push(['base', setup(await load(resolve(a.base)))]);
const results = new Map(runs.map(([n]) => [n, []]));
for (const [, step] of runs) round(step); // warm up
for (let r = 0; r < ROUNDS; r++) for (const [n, step] of runs) results.get(n).push(round(step));
for (const [n, xs] of results) {
  console.log(`${n.padEnd(5)} batch ${BATCH}: ${median(xs).toFixed(1)} ns/request (median of ${ROUNDS}; min ${Math.min(...xs).toFixed(1)}, max ${Math.max(...xs).toFixed(1)})`);
}
