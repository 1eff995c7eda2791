// I/O counters (BlkQueue → SharedArrayBuffer → snapshot), the reactor's
// busy/idle counters, the Prometheus exposition (checked by promtool) and the
// /metrics server.
import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { afterAll, describe, expect, test } from 'vitest';
import { IoOp } from '../../src/bdev/types.js';
import { allocReactorCounters, R_BUSY_NS, R_IDLE_NS, R_SLEEP_SINCE_MS, ReactorCounterReader, monotonicMs } from '../../src/core/reactor-counters.js';
import {
  allocQueueCounters,
  CounterRegistry,
  IoClock,
  LAT_BUCKETS,
  LAT_FINITE,
  latencyBucket,
  Q_IO_NOW,
  type QueueSnapshot,
  readQueueCounters,
} from '../../src/metrics/counters.js';
import { bdevIostat } from '../../src/metrics/iostat.js';
import { escapeLabelValue, renderPrometheus } from '../../src/metrics/prometheus.js';
import { parseMetricsAddr, startMetricsServer } from '../../src/metrics/server.js';
import { BlkQueue, type BlkParams } from '../../src/virtio/blk.js';
import {
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VRING_DESC_F_NEXT as NEXT,
  VRING_DESC_F_WRITE as WRITE,
} from '../../src/virtio/constants.js';
import { TestDriver, d } from './helpers/driver.js';
import { FakeChannel } from './helpers/fake-channel.js';
import { ReactorRig } from './helpers/reactor-rig.js';


/** A clock the test sets (ms); the test then plays the reactor: it calls account() after flush(). */
class FakeClock extends IoClock {
  t = 1000;
  override now(): number {
    return this.t;
  }
}

const params = (over: Partial<BlkParams> = {}): BlkParams => ({
  sizeBytes: 1 << 20,
  blockSize: 512,
  readonly: false,
  discard: true,
  writeZeroes: true,
  maxDiscardSectors: 2048,
  maxWriteZeroesSectors: 2048,
  maxDiscardSeg: 4,
  maxWriteZeroesSeg: 4,
  serial: 'vdx-metrics',
  ...over,
});

class Rig {
  readonly drv = new TestDriver(64, 1 << 20);
  readonly ch = new FakeChannel();
  readonly clock = new FakeClock();
  readonly q: BlkQueue;
  private head = 0;
  constructor(
    readonly sab = allocQueueCounters(),
    p: BlkParams = params(),
  ) {
    this.q = new BlkQueue(this.drv.ring(), this.drv.mem, this.ch, p, { broken: () => {} }, { counters: sab, clock: this.clock });
  }
  private hdr(type: number, sector: number): number {
    const a = this.drv.alloc(16);
    this.drv.dv.setUint32(a, type, true);
    this.drv.dv.setUint32(a + 8, sector, true);
    return a;
  }
  private chain(descs: ReturnType<typeof d>[]): void {
    const h = this.head;
    this.head = (this.head + descs.length) % this.drv.size;
    this.drv.putChain(h, descs);
    this.drv.makeAvail(h);
  }
  /** Make a request available (not yet popped). */
  post(type: number, sector = 0, len = 512): void {
    const data = this.drv.alloc(Math.max(len, 1));
    const st = this.drv.alloc(1, 1);
    if (type === VIRTIO_BLK_T_FLUSH) this.chain([d(this.hdr(type, sector), 16, NEXT), d(st, 1, WRITE)]);
    else this.chain([d(this.hdr(type, sector), 16, NEXT), d(data, len, NEXT | (type === VIRTIO_BLK_T_OUT ? 0 : WRITE)), d(st, 1, WRITE)]);
  }
  postRanges(type: number, segs: [sector: number, sectors: number, flags: number][]): void {
    const p = this.drv.alloc(16 * segs.length);
    segs.forEach(([s, n, f], i) => {
      this.drv.dv.setUint32(p + 16 * i, s, true);
      this.drv.dv.setUint32(p + 16 * i + 8, n, true);
      this.drv.dv.setUint32(p + 16 * i + 12, f, true);
    });
    this.chain([d(this.hdr(type, 0), 16, NEXT), d(p, 16 * segs.length, NEXT), d(this.drv.alloc(1, 1), 1, WRITE)]);
  }
  /** Pop at clock `t0`, complete (one range per poll) and end the pass at `t1`. */
  run(t0 = this.clock.t, t1 = t0): void {
    this.clock.t = t0;
    this.q.poll();
    this.clock.t = t1;
    for (let i = 0; i < 8 && this.q.inflight() > 0; i++) this.ch.poll();
    this.q.flush();
    this.q.account(t1);
  }
  read() {
    return readQueueCounters(this.sab);
  }
}

describe('queue counters', () => {
  test('each op class counts completions, bytes and time; errors go by class', () => {
    const r = new Rig();
    r.post(VIRTIO_BLK_T_IN, 0, 4096);
    r.post(VIRTIO_BLK_T_IN, 8, 512);
    r.post(VIRTIO_BLK_T_OUT, 16, 8192);
    r.post(VIRTIO_BLK_T_FLUSH);
    r.postRanges(VIRTIO_BLK_T_DISCARD, [[0, 8, 0], [64, 16, 0]]);
    r.postRanges(VIRTIO_BLK_T_WRITE_ZEROES, [[128, 4, 1]]);
    r.post(VIRTIO_BLK_T_GET_ID, 0, 20);
    r.run(1000, 1000.005); // 5 µs
    const c = r.read();
    expect(c.ops.read).toEqual({ completed: 2, bytes: 4608, timeSeconds: expect.closeTo(10e-6, 12), errors: 0 });
    expect(c.ops.write).toMatchObject({ completed: 1, bytes: 8192, errors: 0 });
    expect(c.ops.flush).toMatchObject({ completed: 1, bytes: 0, errors: 0 });
    expect(c.ops.discard).toMatchObject({ completed: 1, bytes: 24 * 512, errors: 0 });
    expect(c.ops.write_zeroes).toMatchObject({ completed: 1, bytes: 4 * 512, errors: 0 });
    // GET_ID completes inside poll(), but is timed to the end of the pass like the rest
    expect(c.ops.other).toEqual({ completed: 1, bytes: 0, timeSeconds: expect.closeTo(5e-6, 12), errors: 0 });
    expect(c.inFlight).toBe(0);
    expect(r.q.completed).toBe(7);

    r.ch.fail[IoOp.READ] = -5;
    r.post(VIRTIO_BLK_T_IN, 0, 512); // bdev error
    r.post(VIRTIO_BLK_T_IN, 1 << 20, 512); // beyond capacity
    r.post(99); // unknown type
    r.postRanges(VIRTIO_BLK_T_DISCARD, [[0, 8, 1]]); // UNMAP on a discard: UNSUPP
    r.run();
    const e = r.read();
    expect([e.ops.read.errors, e.ops.other.errors, e.ops.discard.errors]).toEqual([2, 1, 1]);
    expect(e.ops.read.completed).toBe(2); // failures don't count as completed, nor add bytes or time
    expect(e.ops.read.bytes).toBe(4608);
    expect(r.q.failed).toBe(4);
  });

  test('readonly device: writes and write-zeroes fail as their own class', () => {
    const r = new Rig(allocQueueCounters(), params({ readonly: true }));
    r.post(VIRTIO_BLK_T_OUT);
    r.postRanges(VIRTIO_BLK_T_WRITE_ZEROES, [[0, 1, 0]]);
    r.run();
    const c = r.read();
    expect([c.ops.write.errors, c.ops.write_zeroes.errors, c.ops.write.completed]).toEqual([1, 1, 0]);
  });

  test('histogram: the right buckets, buckets sum to the count, sum of latencies', () => {
    const r = new Rig();
    const lat = [0, 0.5, 1, 1.5, 3, 100, 1e6, 5e6]; // µs
    for (const us of lat) {
      r.post(VIRTIO_BLK_T_IN);
      r.run(2000, 2000 + us / 1000);
    }
    const h = r.read().latency;
    expect(h.buckets).toHaveLength(LAT_BUCKETS);
    expect(h.count).toBe(lat.length);
    expect(h.buckets.reduce((a, b) => a + b, 0)).toBe(h.count);
    const want = new Array<number>(LAT_BUCKETS).fill(0);
    for (const us of lat) want[latencyBucket(us / 1000)]!++;
    expect(h.buckets).toEqual(want);
    expect(want[0]).toBe(3); // 0, 0.5 and 1 µs: le=1e-06 is inclusive
    expect(want[LAT_FINITE]).toBe(1); // 5 s is above the last bound (4.19 s)
    expect(h.sumSeconds).toBeCloseTo(lat.reduce((a, b) => a + b, 0) / 1e6, 9);
  });

  const buckets: [number, number][] = [
    [0, 0], [0.001, 0], [0.0011, 1], [0.002, 1], [0.0021, 2], [0.004, 2], [0.005, 3], [1, 10], [1.025, 11],
    [2 ** 22 / 1000, 22], [2 ** 22 / 1000 + 0.001, LAT_FINITE], [1e9, LAT_FINITE],
  ];
  for (const [ms, k] of buckets) test(`latencyBucket(${ms} ms) = ${k}`, () => expect(latencyBucket(ms)).toBe(k));

  test('in flight while the bdev holds requests; io time counts the wall time with any in flight', () => {
    const r = new Rig();
    r.post(VIRTIO_BLK_T_IN);
    r.post(VIRTIO_BLK_T_IN);
    r.clock.t = 3000;
    r.q.poll();
    expect(r.read().inFlight).toBe(2);
    r.clock.t = 3000.01; // 10 µs later both complete
    r.ch.poll();
    r.q.flush();
    expect(r.read().ops.read.completed).toBe(0); // counted at the end of the pass
    r.q.account(3000.01);
    expect(r.read().ops.read.completed).toBe(2);
    r.clock.t = 3001; // idle for a millisecond: not io time
    r.post(VIRTIO_BLK_T_IN);
    r.run(3001, 3001.004);
    const c = r.read();
    expect(c.inFlight).toBe(0);
    expect(c.ioTimeSeconds).toBeCloseTo(14e-6, 12);
  });

  test('a second queue on the same buffer carries on counting (reconnect); a detached one stops', () => {
    const sab = allocQueueCounters();
    const a = new Rig(sab);
    a.post(VIRTIO_BLK_T_IN);
    a.run();
    a.post(VIRTIO_BLK_T_IN);
    a.clock.t += 1;
    a.q.poll();
    expect(readQueueCounters(sab).inFlight).toBe(1);
    a.q.detachCounters(); // stopped as broken with one in flight
    expect(readQueueCounters(sab).inFlight).toBe(0);
    a.ch.poll(); // the stray completion lands where nobody reads
    a.q.flush();
    a.q.account(a.clock.t);
    const b = new Rig(sab);
    b.post(VIRTIO_BLK_T_OUT, 0, 1024);
    b.run();
    const c = readQueueCounters(sab);
    expect([c.ops.read.completed, c.ops.write.completed, c.ops.write.bytes, c.latency.count]).toEqual([1, 1, 1024, 2]);
  });

  test('heads reused before the pass ends are each counted once, however long the pass', () => {
    const r = new Rig();
    for (let i = 0; i < 200; i++) {
      r.post(VIRTIO_BLK_T_GET_ID, 0, 20); // completes inside poll(); its head comes round again every 22 posts
      r.clock.t += 0.001;
      r.q.poll();
    }
    r.q.flush();
    r.q.account(r.clock.t);
    const c = r.read();
    expect([c.ops.other.completed, c.latency.count, r.q.completed]).toEqual([200, 200, 200]);
  });

  test('a queue with its own clock counts at flush(), with real readings', () => {
    const drv = new TestDriver(16, 1 << 16);
    const ch = new FakeChannel();
    const sab = allocQueueCounters();
    const q = new BlkQueue(drv.ring(), drv.mem, ch, params(), { broken: () => {} }, { counters: sab });
    for (let i = 0; i < 50; i++) {
      const h = drv.alloc(16);
      drv.dv.setUint32(h, VIRTIO_BLK_T_FLUSH, true);
      const st = drv.alloc(1, 1);
      drv.putChain(0, [d(h, 16, NEXT), d(st, 1, WRITE)]);
      drv.makeAvail(0);
      q.poll();
      ch.poll();
      q.flush();
    }
    const c = readQueueCounters(sab);
    expect(c.ops.flush.completed).toBe(50);
    expect(c.ops.flush.timeSeconds).toBeGreaterThanOrEqual(0);
    expect(c.latency.count).toBe(50);
  });
});

describe('CounterRegistry', () => {
  test('one buffer per export and queue index, for as long as the export lives', () => {
    const reg = new CounterRegistry();
    const a0 = reg.forQueue('vm1', 'm0', 'vhost-user', 0);
    const a1 = reg.forQueue('vm1', 'm0', 'vhost-user', 1);
    expect(reg.forQueue('vm1', 'm0', 'vhost-user', 0)).toBe(a0);
    expect(a1).not.toBe(a0);
    const b0 = reg.forQueue('blk0', 'm1', 'vduse', 0);
    new Float64Array(a1)[0] = 3;
    expect(reg.snapshot().map((s) => [s.export, s.queue, s.counters.ops.read.completed])).toEqual([
      ['blk0', 0, 0],
      ['vm1', 0, 0],
      ['vm1', 1, 3],
    ]);
    // the same name on another bdev is another device: a fresh start, the old queues gone
    const c0 = reg.forQueue('vm1', 'm2', 'vhost-user', 0);
    expect(c0).not.toBe(a0);
    expect(reg.snapshot().filter((s) => s.export === 'vm1').map((s) => [s.bdev, s.queue])).toEqual([['m2', 0]]);
    reg.forget('vm1');
    expect(reg.snapshot().map((s) => s.export)).toEqual(['blk0']);
    expect(reg.forQueue('blk0', 'm1', 'vduse', 0)).toBe(b0);
  });

  test('bdev_get_iostat sums a bdev over its exports and queues', () => {
    const reg = new CounterRegistry();
    for (const [exp, qi] of [['a', 0], ['a', 1], ['b', 0]] as const) {
      const r = new Rig(reg.forQueue(exp, 'm0', 'vhost-user', qi));
      r.post(VIRTIO_BLK_T_IN, 0, 4096);
      r.postRanges(VIRTIO_BLK_T_DISCARD, [[0, 8, 0]]);
      r.run(10, 10.002);
    }
    const st = bdevIostat(reg.snapshot(), ['m0', 'unused']);
    expect(st.tick_rate).toBe(1e9);
    expect(st.bdevs[0]).toMatchObject({ name: 'm0', num_read_ops: 3, bytes_read: 3 * 4096, num_unmap_ops: 3, bytes_unmapped: 3 * 4096, read_latency_ticks: 6000 });
    expect(st.bdevs[1]).toMatchObject({ name: 'unused', num_read_ops: 0 });
  });
});

describe('reactor counters', () => {
  test('the reader adds an ongoing sleep and never goes backwards', () => {
    const sab = allocReactorCounters();
    const c = new Float64Array(sab);
    const rd = new ReactorCounterReader(2, sab);
    c[R_BUSY_NS] = 2e9;
    c[R_IDLE_NS] = 1e9;
    expect(rd.read()).toMatchObject({ reactor: 2, busySeconds: 2, idleSeconds: 1 });
    c[R_SLEEP_SINCE_MS] = monotonicMs() - 500; // asleep for half a second
    const r1 = rd.read();
    expect(r1.idleSeconds).toBeGreaterThanOrEqual(1.5);
    expect(r1.idleSeconds).toBeLessThan(2);
    // woken: since cleared before the sleep is added to idle; a read in between must not drop
    c[R_SLEEP_SINCE_MS] = 0;
    expect(rd.read().idleSeconds).toBe(r1.idleSeconds);
    c[R_IDLE_NS] = 1.6e9;
    expect(rd.read().idleSeconds).toBeCloseTo(1.6, 9);
  });

  test('a reactor with a queue: busy passes, idle passes, and the queue counted', () => {
    const rig = new ReactorRig();
    const qsab = allocQueueCounters();
    const seq = rig.request({ op: 'addQueue', queue: rig.spec(params(), { counters: qsab }) });
    expect(rig.replies).toContainEqual({ seq, ok: true });
    for (let i = 0; i < 20; i++) {
      rig.postRead();
      rig.reactor.iterate(); // pops, the null bdev completes in the same pass
      for (let k = 0; k < 10; k++) rig.reactor.iterate(); // idle passes
    }
    const q = readQueueCounters(qsab);
    expect([q.ops.read.completed, q.ops.read.bytes, q.latency.count, q.inFlight]).toEqual([20, 20 * 4096, 20, 0]);
    const rc = new ReactorCounterReader(0, rig.counters).read();
    expect(rc.busySeconds).toBeGreaterThan(0);
    expect(rc.idleSeconds).toBeGreaterThan(0);
    expect(rc.iterations).toBeGreaterThanOrEqual(20);
    rig.close();
  });
});

/** A snapshot with hostile label values and every family populated. */
function sampleSnapshot(): { queues: QueueSnapshot[]; reactors: { reactor: number; busySeconds: number; idleSeconds: number; sleeps: number; iterations: number }[] } {
  const reg = new CounterRegistry();
  const names: [string, string, 'vhost-user' | 'vduse', number][] = [
    ['vm-1', 'malloc0', 'vhost-user', 0],
    ['vm-1', 'malloc0', 'vhost-user', 1],
    ['we"ird\\name\nx', 'b\\"', 'vduse', 0],
  ];
  for (const [e, b, f, qi] of names) {
    const r = new Rig(reg.forQueue(e, b, f, qi));
    r.post(VIRTIO_BLK_T_IN, 0, 4096);
    r.post(VIRTIO_BLK_T_OUT, 8, 4096);
    r.post(VIRTIO_BLK_T_FLUSH);
    r.postRanges(VIRTIO_BLK_T_DISCARD, [[0, 8, 0]]);
    r.postRanges(VIRTIO_BLK_T_WRITE_ZEROES, [[8, 8, 0]]);
    r.post(99);
    r.run(1, 1.0123);
    r.post(VIRTIO_BLK_T_IN);
    r.run(2, 2.5); // 500 ms
  }
  return { queues: reg.snapshot(), reactors: [{ reactor: 0, busySeconds: 1.5, idleSeconds: 10.25, sleeps: 42, iterations: 1e6 }, { reactor: 1, busySeconds: 0, idleSeconds: 3, sleeps: 1, iterations: 7 }] };
}

function promtool(text: string): { ok: boolean; out: string } {
  // Not skipped when promtool is missing: scripts/install-deps.sh installs it (Debian's prometheus package).
  try {
    const out = execFileSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    return { ok: true, out };
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stdout?: string; stderr?: string; status?: number };
    if (err.code === 'ENOENT') throw new Error('promtool not found: run scripts/install-deps.sh (Debian package prometheus)');
    return { ok: false, out: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  }
}

describe('Prometheus exposition', () => {
  test('promtool check metrics accepts it', () => {
    const text = renderPrometheus(sampleSnapshot());
    const r = promtool(text);
    expect(r.out).toBe('');
    expect(r.ok).toBe(true);
  });

  test('promtool is a real check: it rejects a broken exposition', () => {
    expect(promtool('# TYPE x_total counter\nx_total{a="1} 1\n').ok).toBe(false);
    expect(promtool('# HELP foo_seconds a gauge named like a counter\n# TYPE foo_seconds counter\nfoo_seconds 1\n').ok).toBe(false);
  });

  test('every family has HELP and TYPE, once, before its samples; the empty snapshot too', () => {
    for (const s of [sampleSnapshot(), { queues: [], reactors: [] }]) {
      const text = renderPrometheus(s);
      expect(promtool(text).ok).toBe(true);
      const seen = new Set<string>();
      let current = '';
      for (const line of text.trimEnd().split('\n')) {
        const m = /^# (HELP|TYPE) (\S+)/.exec(line);
        if (m) {
          if (m[1] === 'HELP') {
            expect(seen.has(m[2]!)).toBe(false);
            seen.add(m[2]!);
          }
          current = m[2]!;
          continue;
        }
        expect(line.startsWith(current)).toBe(true);
      }
      expect(seen.has('node_disk_reads_completed_total')).toBe(true);
      expect(seen.has('vdx_io_latency_seconds')).toBe(true);
    }
  });

  test('values: node_disk_* per queue, sectors of 512 bytes, histogram per export, cumulative', () => {
    const text = renderPrometheus(sampleSnapshot());
    const q0 = 'export="vm-1",bdev="malloc0",frontend="vhost-user",queue="0"';
    expect(text).toContain(`node_disk_reads_completed_total{${q0}} 2\n`);
    expect(text).toContain(`node_disk_read_bytes_total{${q0}} 4608\n`);
    expect(text).toContain(`node_disk_discarded_sectors_total{${q0}} 8\n`);
    expect(text).toContain(`vdx_write_zeroes_bytes_total{${q0}} 4096\n`);
    expect(text).toContain(`vdx_io_errors_total{${q0},op="other"} 1\n`);
    expect(text).toContain(`vdx_reactor_sleeps_total{reactor="0"} 42\n`);
    const e = 'export="vm-1",bdev="malloc0",frontend="vhost-user"';
    // per export: 2 queues x 7 requests; 6 at 12.3 µs (le=16e-6), 1 at 500 ms (le=0.524288)
    expect(text).toContain(`vdx_io_latency_seconds_bucket{${e},le="0.000008"} 0\n`);
    expect(text).toContain(`vdx_io_latency_seconds_bucket{${e},le="0.000016"} 12\n`);
    expect(text).toContain(`vdx_io_latency_seconds_bucket{${e},le="0.524288"} 14\n`);
    expect(text).toContain(`vdx_io_latency_seconds_bucket{${e},le="+Inf"} 14\n`);
    expect(text).toContain(`vdx_io_latency_seconds_count{${e}} 14\n`);
    expect(text).toContain('export="we\\"ird\\\\name\\nx",bdev="b\\\\\\"",frontend="vduse",queue="0"');
  });

  test('label escaping', () => {
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
  });
});

describe('/metrics server', () => {
  const servers: { close(): Promise<void> }[] = [];
  afterAll(async () => {
    for (const s of servers) await s.close();
  });
  const log = { info: () => {}, error: () => {} };
  const get = (port: number, path: string, method = 'GET') =>
    new Promise<{ status: number; type: string | undefined; body: string; allow: string | undefined }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body, allow: res.headers.allow as string | undefined }));
      });
      req.on('error', reject);
      req.end();
    });

  test('GET and HEAD /metrics; 404 elsewhere; 405 for other methods; 500 when collecting fails', async () => {
    let fail = false;
    const s = await startMetricsServer({ host: '127.0.0.1', port: 0 }, async () => {
      if (fail) throw new Error('boom');
      return renderPrometheus(sampleSnapshot());
    }, log);
    servers.push(s);
    expect(s.port).toBeGreaterThan(0);
    const ok = await get(s.port, '/metrics');
    expect(ok.status).toBe(200);
    expect(ok.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(promtool(ok.body).ok).toBe(true);
    expect(await get(s.port, '/metrics?x=1')).toMatchObject({ status: 200 });
    expect(await get(s.port, '/metrics', 'HEAD')).toMatchObject({ status: 200, body: '' });
    expect(await get(s.port, '/')).toMatchObject({ status: 404 });
    expect(await get(s.port, '/metrics', 'POST')).toMatchObject({ status: 405, allow: 'GET, HEAD' });
    fail = true;
    expect(await get(s.port, '/metrics')).toMatchObject({ status: 500 });
  });

  test('a port in use is a clear error', async () => {
    const s = await startMetricsServer({ host: '127.0.0.1', port: 0 }, () => '', log);
    servers.push(s);
    await expect(startMetricsServer({ host: '127.0.0.1', port: s.port }, () => '', log)).rejects.toThrow(/cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
  });

  const addrs: [string, { host: string; port: number } | RegExp][] = [
    ['127.0.0.1:9100', { host: '127.0.0.1', port: 9100 }],
    ['[::1]:9100', { host: '::1', port: 9100 }],
    ['localhost:0', { host: 'localhost', port: 0 }],
    [':9100', { host: '0.0.0.0', port: 9100 }],
    ['127.0.0.1', /no port/],
    ['::1:9100', /IPv6 address goes in brackets: \[::1\]:9100/],
    ['[::1:9100', /no '\]'/],
    ['[::1]9100', /no ':PORT'/],
    ['[1.2.3.4]:80', /not an IPv6 address/],
    ['127.0.0.1:65536', /port '65536' must be an integer in 0\.\.65535/],
    ['127.0.0.1:http', /port 'http'/],
    ['bad_host!:80', /neither an IP address nor a host name/],
  ];
  for (const [s, want] of addrs) {
    test(`parseMetricsAddr('${s}')`, () => {
      if (want instanceof RegExp) expect(() => parseMetricsAddr(s)).toThrow(want);
      else expect(parseMetricsAddr(s)).toEqual(want);
    });
  }
  test('the error names the option and the value', () => {
    expect(() => parseMetricsAddr('x', '--metrics-addr')).toThrow("--metrics-addr 'x': no port (expected HOST:PORT, e.g. 127.0.0.1:9100 or [::1]:9100)");
  });
});

test('the in-flight slot is where the layout says', () => {
  const sab = allocQueueCounters();
  new Float64Array(sab)[Q_IO_NOW] = 3;
  expect(readQueueCounters(sab).inFlight).toBe(3);
});
