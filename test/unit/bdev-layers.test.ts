// Layered bdevs: the forwarding channel against a scripted base (offsets,
// windows, completion order, the child pool), split's and passthru's specs,
// the registry's claims on bases (who may write, what may be deleted), data
// through a split part on a real malloc base, and save_config's one call per
// split.
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { describe, expect, test } from 'vitest';
import { delayBdev, updateLatency } from '../../src/bdev/delay.js';
import { errorBdev, inject, type Injection } from '../../src/bdev/error.js';
import { qosLimits } from '../../src/bdev/qos.js';
import { ForwardChannel } from '../../src/bdev/layer.js';
import { mallocBdev } from '../../src/bdev/malloc.js';
import { splitBdev } from '../../src/bdev/split.js';
import { BdevIo, type BdevDesc, type Channel, type ChannelContext, IoOp } from '../../src/bdev/types.js';
import { BdevRegistry } from '../../src/control/bdevs.js';
import { ControlError } from '../../src/control/errors.js';
import { loadNative } from '../../src/native/index.js';
import { bdevConfigEntries } from '../../src/rpc/methods/bdev-config.js';
import { bdevFromSpec, validateConfig, type DaemonConfig } from '../../src/config/config.js';
import { FakeChannel } from './helpers/fake-channel.js';

const KiB = 1024;
const MiB = 1 << 20;
const log = pino({ level: 'silent' });

function desc(name: string, sizeBytes: number, over: Partial<BdevDesc['info']> = {}): BdevDesc {
  return {
    info: { name, type: 'fake', blockSize: 512, sizeBytes, readonly: false, caps: { flush: true, discard: true, writeZeroes: true }, maxDiscardBytes: MiB, ...over },
    params: {},
  };
}

/** A context whose base channels are given by the test; counts what was opened and given back. */
function context(channels: Record<string, Channel>): ChannelContext & { closed: string[]; opened: string[] } {
  const ctx = {
    closed: [] as string[],
    opened: [] as string[],
    log: () => {},
    openBase: (b: BdevDesc) => {
      ctx.opened.push(b.info.name);
      return channels[b.info.name]!;
    },
    closeBase: (b: BdevDesc) => {
      ctx.closed.push(b.info.name);
    },
  };
  return ctx;
}

function io(op: number, offsetBytes: number, lenBytes: number, done: (io: BdevIo) => void = () => {}): BdevIo {
  const x = new BdevIo();
  x.op = op as BdevIo['op'];
  x.offsetBytes = offsetBytes;
  x.lenBytes = lenBytes;
  x.niov = lenBytes ? 1 : 0;
  x.iov[0] = 0x1000;
  x.iov[1] = lenBytes;
  x.done = done;
  return x;
}

describe('ForwardChannel (a window of a base)', () => {
  const base = desc('f0', 4 * MiB);

  test('I/O is shifted into the window and completes from the base\'s poll, never inside submit', () => {
    const fake = new FakeChannel();
    const ctx = context({ f0: fake });
    const ch = new ForwardChannel(ctx.openBase(base), base, ctx, 1 * MiB, 1 * MiB);
    const seen: number[] = [];
    const r = io(IoOp.READ, 4096, 8192, (x) => seen.push(x.status));
    expect(ch.submit(r)).toBe(0);
    expect(seen).toEqual([]);
    expect(ch.inflight()).toBe(1);
    expect(fake.submitted).toEqual([{ op: IoOp.READ, off: MiB + 4096, len: 8192, unmap: false }]);
    expect(r.offsetBytes).toBe(4096); // the parent is not rewritten
    fake.poll();
    expect(seen).toEqual([0]);
    expect(ch.inflight()).toBe(0);
  });

  test('a base\'s error reaches the parent, with its errno', () => {
    const fake = new FakeChannel();
    fake.fail[IoOp.WRITE] = -5;
    const ctx = context({ f0: fake });
    const ch = new ForwardChannel(ctx.openBase(base), base, ctx, 0, base.info.sizeBytes);
    let status = 1;
    ch.submit(io(IoOp.WRITE, 0, 4096, (x) => (status = x.status)));
    fake.poll();
    expect(status).toBe(-5);
  });

  test('boundaries: the last block passes, one byte past the end or straddling it is refused, and nothing reaches the base', () => {
    const fake = new FakeChannel();
    const ctx = context({ f0: fake });
    const ch = new ForwardChannel(ctx.openBase(base), base, ctx, 2 * MiB, 1 * MiB);
    expect(ch.submit(io(IoOp.READ, MiB - 512, 512))).toBe(0);
    expect(ch.submit(io(IoOp.READ, MiB - 512, 1024))).toBe(-22);
    expect(ch.submit(io(IoOp.WRITE, MiB, 512))).toBe(-22);
    expect(ch.submit(io(IoOp.DISCARD, MiB - 4096, 8192))).toBe(-22);
    expect(ch.submit(io(IoOp.READ, MiB, 0))).toBe(0); // zero-length at the end: inside
    expect(fake.submitted.map((s) => s.off)).toEqual([3 * MiB - 512, 3 * MiB]);
    expect(ch.inflight()).toBe(2);
  });

  test('flush is not shifted (it covers the whole base); discard and write-zeroes keep unmap', () => {
    const fake = new FakeChannel();
    const ctx = context({ f0: fake });
    const ch = new ForwardChannel(ctx.openBase(base), base, ctx, 2 * MiB, 1 * MiB);
    ch.submit(io(IoOp.FLUSH, 0, 0));
    const wz = io(IoOp.WRITE_ZEROES, 8192, 4096);
    wz.unmap = true;
    ch.submit(wz);
    expect(fake.submitted).toEqual([
      { op: IoOp.FLUSH, off: 0, len: 0, unmap: false },
      { op: IoOp.WRITE_ZEROES, off: 2 * MiB + 8192, len: 4096, unmap: true },
    ]);
  });

  test('every segment of a vectored I/O is passed on', () => {
    const got: number[] = [];
    const base2: Channel = Object.assign(new FakeChannel(), {
      submit(x: BdevIo): number {
        for (let i = 0; i < 2 * x.niov; i++) got.push(x.iov[i]!);
        return 0;
      },
    });
    const ctx = context({ f0: base2 });
    const ch = new ForwardChannel(ctx.openBase(base), base, ctx, 0, base.info.sizeBytes);
    const v = io(IoOp.WRITE, 0, 3 * 512);
    v.niov = 3;
    v.iov.set([0x1000, 512, 0x3000, 512, 0x9000, 512]);
    expect(ch.submit(v)).toBe(0);
    expect(got).toEqual([0x1000, 512, 0x3000, 512, 0x9000, 512]);
  });

  test('a base that refuses: the errno comes back from submit and the child is reused', () => {
    let refuse = true;
    const fake = new FakeChannel();
    const picky: Channel = Object.assign(Object.create(fake) as FakeChannel, {
      submit: (x: BdevIo) => (refuse ? -11 : FakeChannel.prototype.submit.call(fake, x)),
    });
    const ctx = context({ f0: picky });
    const ch = new ForwardChannel(ctx.openBase(base), base, ctx, 0, base.info.sizeBytes);
    expect(ch.submit(io(IoOp.READ, 0, 512))).toBe(-11);
    expect(ch.inflight()).toBe(0);
    refuse = false;
    expect(ch.submit(io(IoOp.READ, 0, 512))).toBe(0);
    fake.poll();
    expect(ch.inflight()).toBe(0);
  });

  test('the child pool grows to the deepest queue and is then reused: no allocation per I/O', () => {
    const fake = new FakeChannel();
    const ctx = context({ f0: fake });
    const ch = new ForwardChannel(ctx.openBase(base), base, ctx, 0, base.info.sizeBytes);
    const children = new Set<BdevIo>();
    const track: Channel = Object.assign(Object.create(fake) as FakeChannel, {
      submit: (x: BdevIo) => {
        children.add(x);
        return FakeChannel.prototype.submit.call(fake, x);
      },
    });
    const ch2 = new ForwardChannel(track, base, ctx, 0, base.info.sizeBytes);
    for (let round = 0; round < 50; round++) {
      for (let k = 0; k < 32; k++) expect(ch2.submit(io(IoOp.READ, k * 512, 512))).toBe(0);
      fake.poll();
    }
    expect(children.size).toBe(32);
    ch.close();
  });

  test('close gives the base back once', () => {
    const ctx = context({ f0: new FakeChannel() });
    const ch = new ForwardChannel(ctx.openBase(base), base, ctx, 0, base.info.sizeBytes);
    ch.close();
    ch.close();
    expect(ctx.closed).toEqual(['f0']);
  });
});

describe('split specs', () => {
  const base = desc('f0', 10 * MiB + 512);

  test('equal parts round down to whole blocks; named <base>p<i>', () => {
    const parts = splitBdev.expand!({ base: 'f0', count: '3' }, [base]);
    expect(parts.map((p) => p.name)).toEqual(['f0p0', 'f0p1', 'f0p2']);
    const made = parts.map((p) => splitBdev.create(splitBdev.normalize(p), [base]) as BdevDesc);
    const each = Math.floor((10 * MiB + 512) / 512 / 3) * 512;
    expect(made.map((d) => d.info.sizeBytes)).toEqual([each, each, each]);
    expect(made.map((d) => d.params.offsetBytes)).toEqual([0, each, 2 * each]);
    expect(splitBdev.describe(made[2]!).driverSpecific).toEqual({ split: { base_bdev: 'f0', offset_blocks: (2 * each) / 512 } });
  });

  test('parts of a given size; too many for the base is refused before any exists, saying what fits', () => {
    const parts = splitBdev.expand!({ base: 'f0', count: '2', size: '4M' }, [base]);
    expect(parts.map((p) => p.size)).toEqual([String(4 * MiB), String(4 * MiB)]);
    expect(() => splitBdev.expand!({ base: 'f0', count: '3', size: '4M' }, [base])).toThrow(/3 parts of 4194304 bytes need 12582912 bytes; f0 has 10486272/);
    expect(() => splitBdev.expand!({ base: 'f0', count: '2', size: '1000' }, [base])).toThrow(/size=1000: must be a multiple of 512/);
    expect(() => splitBdev.expand!({ base: 'f0', count: '0' }, [base])).toThrow(/count=0 must be a whole number of parts in 1\.\.1024/);
    expect(() => splitBdev.expand!({ base: 'f0', count: '2', bogus: '1' }, [base])).toThrow(/unknown key 'bogus'/);
    expect(() => splitBdev.expand!({ base: 'tiny', count: '4' }, [desc('tiny', 1024)])).toThrow(/too small for 4 parts/);
    expect(() => splitBdev.expand!({ base: 'f0', count: '2', name: 'x' }, [base])).toThrow(/parts are named f0p0, f0p1/);
  });

  test('a part\'s own spec must be consistent', () => {
    expect(() => splitBdev.normalize({ name: 'f0p4', base: 'f0', count: '4', size: '0', index: '4' })).toThrow(/index=4 must be a part number in 0\.\.3/);
    expect(() => splitBdev.normalize({ name: 'other', base: 'f0', count: '4', size: '0', index: '1' })).toThrow(/is named f0p1, not other/);
  });

  test('the command line: split:base=,count= names its parts; a layer must come after its base', () => {
    const cfg = (bdevs: string[], exports: DaemonConfig['exports'] = []): DaemonConfig => ({ reactors: 1, cpus: [], idleSpinUs: 0, bdevs: bdevs.map(bdevFromSpec), exports });
    expect(() => validateConfig(cfg(['malloc:name=m0,size=8M', 'split:base=m0,count=2', 'passthru:name=pt,base=m0p1']))).not.toThrow();
    expect(() => validateConfig(cfg(['split:base=m0,count=2', 'malloc:name=m0,size=8M']))).toThrow(/base=m0 is not defined before it/);
    expect(() => validateConfig(cfg(['malloc:name=m0p1,size=8M', 'malloc:name=m0,size=8M', 'split:base=m0,count=2']))).toThrow(/bdev name 'm0p1' is used twice/);
    expect(() => bdevFromSpec('split:base=m0')).toThrow(/count= must be a whole number of parts/);
    expect(() => bdevFromSpec('passthru:name=p')).toThrow(/missing base=/);
  });
});

describe('registry: layers claim their bases', () => {
  async function withBase(): Promise<InstanceType<typeof BdevRegistry>> {
    const reg = new BdevRegistry(log);
    await reg.create({ type: 'malloc', name: 'm0', size: String(8 * MiB) });
    return reg;
  }

  test('a split claims its base once for all its parts; a second layer or a writer is refused naming it; a reader is not', async () => {
    const reg = await withBase();
    const { entries, created } = await reg.create({ type: 'split', base: 'm0', count: '4' });
    expect(created).toBe(true);
    expect(entries.map((e) => e.desc.info.name)).toEqual(['m0p0', 'm0p1', 'm0p2', 'm0p3']);
    expect([...reg.get('m0').claims]).toEqual([['split m0', { kind: 'exclusive', count: 4 }]]);
    await expect(reg.create({ type: 'passthru', name: 'pt', base: 'm0' })).rejects.toThrow(/bdev 'm0' is written through split m0; a layer needs to be its only writer/);
    expect(() => reg.claim('m0', 'vhost controller v0', 'write')).toThrow(/claimed for writing by split m0; use that, or export 'm0' with readonly=on/);
    expect(() => reg.claim('m0', 'vhost controller v1', 'read')).not.toThrow();
    await expect(reg.delete('m0')).rejects.toThrow(/claimed by split m0, vhost controller v1/);
    // The same split again is the same split (an orchestrator retries).
    const again = await reg.create({ type: 'split', base: 'm0', count: '4' });
    expect(again.created).toBe(false);
    expect(reg.get('m0').claims.get('split m0')!.count).toBe(4);
    await reg.clear();
  });

  test('a layer is refused on a bdev someone writes to, naming the writer', async () => {
    const reg = await withBase();
    reg.claim('m0', 'vduse device vd0', 'write');
    await expect(reg.create({ type: 'split', base: 'm0', count: '2' })).rejects.toThrow(/bdev 'm0' is written through vduse device vd0; a layer needs to be its only writer/);
    expect(reg.has('m0p0')).toBe(false);
    reg.release('m0', 'vduse device vd0');
    await reg.clear();
  });

  test('parts go together: one alone is refused with the call that deletes them; split delete refuses while a part is used, then frees the base', async () => {
    const reg = await withBase();
    await reg.create({ type: 'split', base: 'm0', count: '2' });
    await expect(reg.delete('m0p1')).rejects.toThrow(/one of the bdevs of split m0, deleted together: bdev_split_delete m0/);
    reg.claim('m0p1', 'vhost controller v0', 'write');
    await expect(reg.deleteGroup('split m0')).rejects.toThrow(/split m0 is in use: m0p1 by vhost controller v0/);
    reg.release('m0p1', 'vhost controller v0');
    await reg.deleteGroup('split m0');
    expect(reg.has('m0p0') || reg.has('m0p1')).toBe(false);
    expect(reg.get('m0').claims.size).toBe(0);
    await expect(reg.deleteGroup('split m0')).rejects.toThrow(/no split m0/);
    await reg.delete('m0');
    await reg.clear();
  });

  test('all or nothing: a part whose name is taken undoes the parts made before it', async () => {
    const reg = await withBase();
    await reg.create({ type: 'null', name: 'm0p1', size: String(MiB) });
    await expect(reg.create({ type: 'split', base: 'm0', count: '3' })).rejects.toThrow(/bdev 'm0p1' already exists with different parameters/);
    expect(reg.has('m0p0')).toBe(false);
    expect(reg.get('m0').claims.size).toBe(0);
    await reg.clear();
  });

  test('layers on layers; deleting a passthru frees its base; a missing base is named', async () => {
    const reg = await withBase();
    await reg.create({ type: 'split', base: 'm0', count: '2' });
    const pt = (await reg.create({ type: 'passthru', name: 'pt', base: 'm0p1' })).entry;
    expect(pt.desc.info.sizeBytes).toBe(4 * MiB);
    expect(pt.desc.bases![0]!.info.name).toBe('m0p1');
    expect(pt.desc.bases![0]!.bases![0]!.info.name).toBe('m0');
    expect(pt.desc.info.volatile).toBe(true); // malloc underneath: dies with the process
    await expect(reg.deleteGroup('split m0')).rejects.toThrow(/m0p1 by passthru pt/);
    await reg.delete('pt', 'passthru');
    expect(reg.get('m0p1').claims.size).toBe(0);
    await expect(reg.create({ type: 'passthru', name: 'q', base: 'nope' })).rejects.toThrow(/no bdev 'nope'/);
    await expect(reg.create({ type: 'passthru', name: 'q', base: 'q' })).rejects.toThrow(/is its own base/);
    await reg.clear(); // newest first: nothing is refused for being claimed
  });

  test('save_config writes one bdev_split_create per split, after its base and before what is built on it', async () => {
    const reg = await withBase();
    await reg.create({ type: 'split', base: 'm0', count: '2' });
    await reg.create({ type: 'passthru', name: 'pt', base: 'm0p1' });
    await reg.create({ type: 'malloc', name: 'm1', size: String(8 * MiB) });
    await reg.create({ type: 'split', base: 'm1', count: '2', size: String(2 * MiB) });
    const entries = bdevConfigEntries(reg.list());
    expect(entries.map((e) => e.method)).toEqual(['bdev_malloc_create', 'bdev_split_create', 'bdev_passthru_create', 'bdev_malloc_create', 'bdev_split_create']);
    expect(entries[1]!.params).toEqual({ base_bdev: 'm0', split_count: 2 });
    expect(entries[2]!.params).toMatchObject({ base_bdev_name: 'm0p1', name: 'pt' });
    expect(entries[4]!.params).toEqual({ base_bdev: 'm1', split_count: 2, split_size_mb: 2 });
    await reg.clear();
  });

  test('QoS limits in a spec are the registry\'s keys: set at create, shown as SPDK shows them, bad values refused', async () => {
    const reg = new BdevRegistry(log);
    const { entry } = await reg.create({ type: 'null', name: 'q0', size: String(MiB), 'rw-ios-per-sec': '500', 'r-mbytes-per-sec': '20' });
    expect(qosLimits(entry.desc.qos!)).toEqual({ rw_ios_per_sec: 500, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 20, w_mbytes_per_sec: 0 });
    expect(entry.spec).not.toHaveProperty('rw-ios-per-sec'); // run-time state: save_config writes bdev_set_qos_limit
    await expect(reg.create({ type: 'null', name: 'q1', size: String(MiB), 'w-mbytes-per-sec': 'fast' })).rejects.toThrow(/w-mbytes-per-sec=fast must be a whole number \(0: no limit\)/);
    expect(bdevConfigEntries(reg.list()).map((c) => c.method)).toEqual(['bdev_null_create', 'bdev_set_qos_limit']);
    await reg.clear();
  });

  test('refusals are ControlErrors with an errno (EBUSY), so RPC callers get -16', async () => {
    const reg = await withBase();
    await reg.create({ type: 'split', base: 'm0', count: '2' });
    const err = await reg.delete('m0').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ControlError);
    expect((err as ControlError).code).toBe(-16);
    await reg.clear();
  });
});

describe('data through a split part on a real malloc base', () => {
  test('a write to part 1 lands at part 1\'s offset of the base; reads come back through the part', () => {
    const n = loadNative();
    const baseDesc = mallocBdev.create(mallocBdev.normalize({ name: 'm0', size: String(4 * MiB) }), []) as BdevDesc;
    const parts = splitBdev.expand!({ base: 'm0', count: '2' }, [baseDesc]).map((p) => splitBdev.create(splitBdev.normalize(p), [baseDesc]) as BdevDesc);
    const baseChannel = mallocBdev.open(baseDesc, context({}));
    const ctx = context({ m0: baseChannel });
    const p1 = splitBdev.open(parts[1]!, ctx);
    const buf = n.mmap(-1, 0, 64 * KiB, n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED | n.MAP_ANONYMOUS);
    const bytes = new Uint8Array(buf.buffer!);
    bytes.fill(0x5a, 0, 4096);
    let done = 0;
    const w = io(IoOp.WRITE, 8192, 4096, () => done++);
    w.iov[0] = buf.addr;
    expect(p1.submit(w)).toBe(0);
    baseChannel.poll();
    expect(done).toBe(1);
    // Read the base directly at part 1's offset + 8192.
    const r = io(IoOp.READ, 2 * MiB + 8192, 4096, () => done++);
    r.iov[0] = buf.addr + 8192;
    expect(baseChannel.submit(r)).toBe(0);
    baseChannel.poll();
    expect(bytes.subarray(8192, 8192 + 4096).every((b) => b === 0x5a)).toBe(true);
    // And part 0 at the same offset still reads zeroes.
    const p0 = splitBdev.open(parts[0]!, ctx);
    const r0 = io(IoOp.READ, 8192, 4096, () => done++);
    r0.iov[0] = buf.addr + 16384;
    expect(p0.submit(r0)).toBe(0);
    baseChannel.poll();
    expect(bytes.subarray(16384, 16384 + 4096).every((b) => b === 0)).toBe(true);
    expect(done).toBe(3);
    p0.close();
    p1.close();
    expect(ctx.closed).toEqual(['m0', 'm0']);
    baseChannel.close();
    n.munmap(buf.buffer, buf.addr, 64 * KiB);
    mallocBdev.destroy(baseDesc);
  });
});

describe('layers that misbehave or outlive their queue', () => {
  test('a throw in a layer\'s completion is raised from the layer\'s own poll, not the base\'s', () => {
    const base = desc('f0', MiB);
    const fake = new FakeChannel();
    const ctx = context({ f0: fake });
    class Bad extends ForwardChannel {
      protected override baseDone(): void {
        throw new Error('layer bug');
      }
    }
    const ch = new Bad(ctx.openBase(base), base, ctx, 0, MiB);
    ch.submit(io(IoOp.READ, 0, 512));
    expect(() => fake.poll()).not.toThrow();
    expect(() => ch.poll()).toThrow(/layer bug/);
    expect(() => ch.poll()).not.toThrow(); // raised once
  });
});

describe('delay', () => {
  const base = desc('f0', 4 * MiB);
  const make = (keys: Record<string, string>) => {
    const spec = delayBdev.normalize({ name: 'd0', base: 'f0', ...keys });
    return delayBdev.create(spec, [base]) as BdevDesc;
  };

  /** Run like a reactor: poll the base and the delay channel, sleep in epoll on the delay's fd while I/O is held. */
  const loops = new Map<Channel, number>();
  function reactorLoop(ch: Channel, fake: FakeChannel, until: () => boolean): void {
    const n = loadNative();
    let ep = loops.get(ch);
    if (ep === undefined) {
      ep = n.epollCreate();
      n.epollCtl(ep, n.EPOLL_CTL_ADD, ch.notifyFd, n.EPOLLIN, 1);
      loops.set(ch, ep);
    }
    const events = new Uint32Array(8);
    while (!until()) {
      fake.poll();
      ch.poll();
      if (until()) break;
      // No timeout: a held I/O whose timer was never armed hangs the test (and its timeout says so).
      if (ch.kernelInflight() > 0 && n.epollWait(ep, events, -1) > 0) ch.clearNotify();
    }
  }

  test('1000 reads at QD1 take the configured average (p99 one in 100) within 20 %, and the loop sleeps instead of spinning', { timeout: 30_000 }, () => {
    const d = make({ 'avg-read-latency': '2000', 'p99-read-latency': '10000' });
    const fake = new FakeChannel();
    const ctx = context({ f0: fake });
    const ch = delayBdev.open(d, ctx);
    const lat: number[] = [];
    let finished = false;
    const r = io(IoOp.READ, 0, 4096, () => (finished = true));
    const cpu0 = process.cpuUsage();
    const wall0 = performance.now();
    let refused = 0;
    for (let i = 0; i < 1000; i++) {
      finished = false;
      const t0 = performance.now();
      if (ch.submit(r) !== 0) refused++;
      reactorLoop(ch, fake, () => finished);
      lat.push((performance.now() - t0) * 1000);
    }
    expect(refused).toBe(0);
    const cpu = process.cpuUsage(cpu0);
    const wallUs = (performance.now() - wall0) * 1000;
    const mean = lat.reduce((a, b) => a + b, 0) / lat.length;
    const expected = 0.99 * 2000 + 0.01 * 10000;
    process.stderr.write(`delay: mean ${mean.toFixed(0)} µs over 1000 reads (expected ${expected})\n`);
    expect(mean).toBeGreaterThan(expected * 0.8);
    expect(mean).toBeLessThan(expected * 1.2);
    const slow = lat.filter((l) => l >= 8000).length;
    expect(slow).toBeGreaterThanOrEqual(1);
    expect(slow).toBeLessThanOrEqual(30);
    expect(Math.min(...lat)).toBeGreaterThanOrEqual(2000);
    // Asleep between timer expirations: far less CPU than wall time.
    expect((cpu.user + cpu.system) / wallUs).toBeLessThan(0.7);
    ch.close();
  });

  test('reads and writes each take their own latency; flush, discard and write-zeroes are not delayed; a change at run time applies to the next I/O', () => {
    const d = make({ 'avg-read-latency': '0', 'avg-write-latency': '3000' });
    const fake = new FakeChannel();
    const ch = delayBdev.open(d, context({ f0: fake }));
    const time = (op: number) => {
      let done = false;
      const t0 = performance.now();
      expect(ch.submit(io(op, 0, op === IoOp.FLUSH ? 0 : 4096, () => (done = true)))).toBe(0);
      reactorLoop(ch, fake, () => done);
      return (performance.now() - t0) * 1000;
    };
    expect(time(IoOp.READ)).toBeLessThan(1500);
    expect(time(IoOp.WRITE)).toBeGreaterThanOrEqual(3000);
    expect(time(IoOp.FLUSH)).toBeLessThan(1500);
    expect(time(IoOp.DISCARD)).toBeLessThan(1500);
    expect(time(IoOp.WRITE_ZEROES)).toBeLessThan(1500);
    expect(() => updateLatency(d, 'avg-read-latency', 2000)).toThrow(/p99-read-latency=0 is below avg-read-latency=2000/);
    updateLatency(d, 'p99-read-latency', 2000);
    updateLatency(d, 'avg-read-latency', 2000);
    expect(time(IoOp.READ)).toBeGreaterThanOrEqual(2000);
    expect(() => updateLatency(d, 'p99-write-latency', 10)).toThrow(/p99-write-latency=10 is below avg-write-latency=3000/);
    expect(delayBdev.describe(d).driverSpecific).toEqual({ delay: { name: 'd0', base_bdev_name: 'f0', avg_read_latency: 2000, p99_read_latency: 2000, avg_write_latency: 3000, p99_write_latency: 3000 } });
    ch.close();
  });

  test('many in flight complete in due order, each after its own latency; a base error still reaches the parent after the delay', () => {
    const d = make({ 'avg-write-latency': '2000' });
    const fake = new FakeChannel();
    fake.fail[IoOp.WRITE] = -5;
    const ch = delayBdev.open(d, context({ f0: fake }));
    const statuses: number[] = [];
    const t0 = performance.now();
    for (let k = 0; k < 64; k++) expect(ch.submit(io(IoOp.WRITE, k * 4096, 4096, (x) => statuses.push(x.status)))).toBe(0);
    expect(ch.inflight()).toBe(64);
    reactorLoop(ch, fake, () => statuses.length === 64);
    expect((performance.now() - t0) * 1000).toBeGreaterThanOrEqual(2000);
    expect(new Set(statuses)).toEqual(new Set([-5]));
    expect(ch.kernelInflight()).toBe(0);
    ch.close();
  });

  test('specs: p99 defaults to the average and may not be below it; latencies are bounded', () => {
    expect(delayBdev.normalize({ name: 'd', base: 'b', 'avg-read-latency': '100' })).toEqual({
      name: 'd', base: 'b', 'avg-read-latency': '100', 'p99-read-latency': '100', 'avg-write-latency': '0', 'p99-write-latency': '0',
    });
    expect(() => delayBdev.normalize({ name: 'd', base: 'b', 'avg-read-latency': '100', 'p99-read-latency': '50' })).toThrow(/p99-read-latency=50 is below avg-read-latency=100/);
    expect(() => delayBdev.normalize({ name: 'd', base: 'b', 'avg-write-latency': '-1' })).toThrow(/must be a whole number of µs/);
    expect(() => delayBdev.normalize({ name: 'd', base: 'b', 'avg-write-latency': '600000001' })).toThrow(/0\.\.600000000/);
  });
});

describe('error', () => {
  const base = desc('f0', 4 * MiB);
  const make = () => errorBdev.create(errorBdev.normalize({ name: 'EE_f0', base: 'f0' }), [base]) as BdevDesc;
  const inj = (d: BdevDesc, ioType: string, errorType: Injection['errorType'], num = 1, corruptOffset = 0, corruptValue = 0) =>
    inject(d, { ioType, errorType, num, corruptOffset, corruptValue });

  test('failure: the next N I/Os of that type fail with EIO (from poll, not inside submit), the others pass; counted across channels', () => {
    const d = make();
    const fake = new FakeChannel();
    const ctx = context({ f0: fake });
    const a = errorBdev.open(d, ctx);
    const b = errorBdev.open(d, ctx); // a second reactor's channel on the same bdev
    inj(d, 'write', 'failure', 3);
    const got: number[] = [];
    for (const ch of [a, b, a, b, a]) expect(ch.submit(io(IoOp.WRITE, 0, 512, (x) => got.push(x.status)))).toBe(0);
    expect(ch_submitRead(a, got)).toBe(0);
    expect(got).toEqual([]);
    a.poll();
    b.poll();
    fake.poll();
    expect(got.sort()).toEqual([-5, -5, -5, 0, 0, 0].sort());
    expect(fake.submitted.map((s) => s.op)).toEqual([IoOp.WRITE, IoOp.WRITE, IoOp.READ]);
    expect(errorBdev.describe(d).driverSpecific).toEqual({ error: { base_bdev: 'f0', injected: {} } });
  });

  function ch_submitRead(ch: Channel, got: number[]): number {
    return ch.submit(io(IoOp.READ, 0, 512, (x) => got.push(x.status)));
  }

  test('until cleared (num 0) on every type; clear ends it', () => {
    const d = make();
    const fake = new FakeChannel();
    const ch = errorBdev.open(d, context({ f0: fake }));
    inj(d, 'all', 'failure', 0);
    expect(errorBdev.describe(d).driverSpecific).toMatchObject({ error: { injected: { read: { error_type: 'failure', remaining: 'until cleared' }, flush: { error_type: 'failure' } } } });
    const got: number[] = [];
    for (const op of [IoOp.READ, IoOp.WRITE, IoOp.FLUSH, IoOp.DISCARD, IoOp.WRITE_ZEROES]) ch.submit(io(op, 0, op === IoOp.FLUSH ? 0 : 512, (x) => got.push(x.status)));
    ch.poll();
    expect(got).toEqual([-5, -5, -5, -5, -5]);
    inj(d, 'clear', 'clear');
    ch.submit(io(IoOp.READ, 0, 512, (x) => got.push(x.status)));
    fake.poll();
    expect(got.at(-1)).toBe(0);
  });

  test('pending: held (in flight, never completed) until cleared, then sent to the base', () => {
    const d = make();
    const fake = new FakeChannel();
    const ch = errorBdev.open(d, context({ f0: fake }));
    inj(d, 'read', 'pending', 2);
    const got: number[] = [];
    for (let k = 0; k < 3; k++) ch.submit(io(IoOp.READ, k * 512, 512, (x) => got.push(x.offsetBytes)));
    ch.poll();
    fake.poll();
    expect(got).toEqual([1024]); // the third was not injected
    expect(ch.inflight()).toBe(2);
    ch.settingsChanged!(); // nothing cleared yet: still held
    expect(ch.inflight()).toBe(2);
    inj(d, 'clear', 'clear');
    ch.settingsChanged!();
    fake.poll();
    expect(got).toEqual([1024, 0, 512]);
    expect(ch.inflight()).toBe(0);
  });

  test('a stopping queue ends what pending holds: it fails with EIO instead of waiting for a clear', () => {
    const d = make();
    const fake = new FakeChannel();
    const ch = errorBdev.open(d, context({ f0: fake }));
    inj(d, 'write', 'pending', 0);
    const got: number[] = [];
    ch.submit(io(IoOp.WRITE, 0, 512, (x) => got.push(x.status)));
    ch.submit(io(IoOp.WRITE, 512, 512, (x) => got.push(x.status)));
    ch.poll();
    expect(got).toEqual([]);
    ch.stopping!();
    ch.poll();
    expect(got).toEqual([-5, -5]);
    expect(ch.inflight()).toBe(0);
    expect(fake.submitted).toEqual([]);
  });

  test('corrupt_data on reads: one byte XORed where asked, in the right segment; the base keeps its data; writes refused', () => {
    const n = loadNative();
    const m = mallocBdev.create(mallocBdev.normalize({ name: 'm0', size: String(MiB) }), []) as BdevDesc;
    const d = errorBdev.create(errorBdev.normalize({ name: 'EE_m0', base: 'm0' }), [m]) as BdevDesc;
    const mc = mallocBdev.open(m, context({}));
    const ch = errorBdev.open(d, context({ m0: mc }));
    const buf = n.mmap(-1, 0, 64 * KiB, n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED | n.MAP_ANONYMOUS);
    const bytes = new Uint8Array(buf.buffer!);
    bytes.fill(0x40, 0, 8192);
    const w = io(IoOp.WRITE, 0, 8192);
    w.iov[0] = buf.addr;
    ch.submit(w);
    mc.poll();
    inj(d, 'read', 'corrupt_data', 1, 4096 + 7, 0x0f);
    for (let round = 0; round < 2; round++) {
      const r = io(IoOp.READ, 0, 8192);
      r.niov = 2; // two segments: the offset lands in the second
      r.iov.set([buf.addr + 16384, 4096, buf.addr + 32768, 4096]);
      bytes.fill(0, 16384, 65536);
      ch.submit(r);
      mc.poll();
      const second = bytes.subarray(32768, 32768 + 4096);
      if (round === 0) {
        expect(second[7]).toBe(0x40 ^ 0x0f);
        expect([...second].filter((b) => b !== 0x40).length).toBe(1);
      } else {
        expect(second.every((b) => b === 0x40)).toBe(true); // only one I/O was injected; the store was never changed
      }
      expect(bytes.subarray(16384, 16384 + 4096).every((b) => b === 0x40)).toBe(true);
    }
    expect(() => inj(d, 'write', 'corrupt_data', 1, 0, 1)).toThrow(/corrupt_data applies to reads here/);
    expect(() => inj(d, 'bogus', 'failure')).toThrow(/io_type=bogus is not one of read, write, flush, unmap, write_zeroes, all, clear/);
    ch.close();
    mc.close();
    n.munmap(buf.buffer, buf.addr, 64 * KiB);
    mallocBdev.destroy(m);
  });
});
