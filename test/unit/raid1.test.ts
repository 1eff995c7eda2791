// raid1: fan-out of writes, reads in turn, a member failed on its error while
// the guest sees none, the last online member never failed, the rebuild's
// lock against concurrent writes, a rebuild over real malloc members that
// leaves them byte-identical, the spec and the RPC-level member operations.
import { pino } from 'pino';
import { describe, expect, test } from 'vitest';
import { hostBuffer } from '../../src/bdev/api.js';
import { mallocBdev } from '../../src/bdev/malloc.js';
import { CHUNK_BYTES, raid1Bdev, raidAddMember, raidRemoveMember, raidStatus } from '../../src/bdev/raid1.js';
import { BdevIo, type BdevDesc, type Channel, type ChannelContext, IoOp } from '../../src/bdev/types.js';
import { BdevRegistry } from '../../src/control/bdevs.js';
import { bdevConfigEntries } from '../../src/rpc/methods/bdev-config.js';
import { FakeChannel } from './helpers/fake-channel.js';

const MiB = 1 << 20;
const EIO = -5;

function desc(name: string, sizeBytes: number, over: Partial<BdevDesc['info']> = {}): BdevDesc {
  return {
    info: { name, type: 'fake', blockSize: 512, sizeBytes, readonly: false, caps: { flush: true, discard: true, writeZeroes: true }, maxDiscardBytes: MiB, ...over },
    params: {},
  };
}

function context(channels: Record<string, Channel>): ChannelContext & { closed: string[]; logs: string[] } {
  const ctx = {
    closed: [] as string[],
    logs: [] as string[],
    log: (_level: string, msg: string) => ctx.logs.push(msg),
    openBase: (b: BdevDesc) => channels[b.info.name]!,
    closeBase: (b: BdevDesc) => ctx.closed.push(b.info.name),
  };
  return ctx;
}

function io(op: number, offsetBytes: number, lenBytes: number, done: (io: BdevIo) => void = () => {}, addr = 0x1000): BdevIo {
  const x = new BdevIo();
  x.op = op as BdevIo['op'];
  x.offsetBytes = offsetBytes;
  x.lenBytes = lenBytes;
  x.niov = lenBytes ? 1 : 0;
  x.iov[0] = addr;
  x.iov[1] = lenBytes;
  x.done = done;
  return x;
}

function mirror(members: BdevDesc[]): BdevDesc {
  const spec = raid1Bdev.normalize({ name: 'r0', members: members.map((m) => m.info.name).join('+') });
  return raid1Bdev.create(spec, members) as BdevDesc;
}

function states(d: BdevDesc): string[] {
  return raidStatus(d).base_bdevs_list.map((m) => m.state);
}

describe('raid1 over scripted members', () => {
  const a = desc('a', 8 * MiB);
  const b = desc('b', 4 * MiB);

  test('writes go to every member, reads to one in turn; the size is the smallest member\'s; nothing completes inside submit', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([a, b]);
    expect(d.info.sizeBytes).toBe(4 * MiB);
    const ch = raid1Bdev.open(d, context({ a: fa, b: fb }));
    const seen: number[] = [];
    expect(ch.submit(io(IoOp.WRITE, 4096, 4096, (x) => seen.push(x.status)))).toBe(0);
    expect(fa.submitted).toHaveLength(1);
    expect(fb.submitted).toHaveLength(1);
    fa.poll();
    expect(seen).toEqual([]); // one member still owes its write
    fb.poll();
    expect(seen).toEqual([0]);
    for (let i = 0; i < 4; i++) ch.submit(io(IoOp.READ, 0, 4096, (x) => seen.push(x.status)));
    expect(fa.submitted.filter((s) => s.op === IoOp.READ)).toHaveLength(2);
    expect(fb.submitted.filter((s) => s.op === IoOp.READ)).toHaveLength(2);
    fa.poll();
    fb.poll();
    expect(seen).toEqual([0, 0, 0, 0, 0]);
    expect(ch.submit(io(IoOp.READ, 4 * MiB - 512, 1024))).toBe(-22); // past the mirror's end
    expect(ch.inflight()).toBe(0);
  });

  test('a member that fails a write is failed; the write succeeds from the other, later I/O skips it, and the log says so once', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([a, b]);
    const ctx = context({ a: fa, b: fb });
    const ch = raid1Bdev.open(d, ctx);
    const seen: number[] = [];
    fb.fail[IoOp.WRITE] = EIO;
    ch.submit(io(IoOp.WRITE, 0, 4096, (x) => seen.push(x.status)));
    ch.submit(io(IoOp.WRITE, 8192, 4096, (x) => seen.push(x.status)));
    fa.poll();
    fb.poll();
    expect(seen).toEqual([0, 0]);
    expect(states(d)).toEqual(['online', 'failed']);
    expect(raidStatus(d).num_base_bdevs_operational).toBe(1);
    expect(ctx.logs.filter((l) => /member b failed a write \(errno 5\)/.test(l))).toHaveLength(1);
    ch.submit(io(IoOp.WRITE, 0, 4096, (x) => seen.push(x.status)));
    ch.submit(io(IoOp.READ, 0, 4096, (x) => seen.push(x.status)));
    ch.submit(io(IoOp.READ, 0, 4096, (x) => seen.push(x.status)));
    expect(fb.submitted).toHaveLength(2);
    fa.poll();
    expect(seen).toEqual([0, 0, 0, 0, 0]);
  });

  test('a read that fails on one member is retried on the other; the guest sees the data, the member is failed', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([a, b]);
    const ch = raid1Bdev.open(d, context({ a: fa, b: fb }));
    fa.fail[IoOp.READ] = EIO;
    const seen: number[] = [];
    ch.submit(io(IoOp.READ, 0, 4096, (x) => seen.push(x.status)));
    expect(fa.submitted).toHaveLength(1);
    fa.poll();
    expect(seen).toEqual([]);
    expect(fb.submitted).toHaveLength(1);
    fb.poll();
    expect(seen).toEqual([0]);
    expect(states(d)).toEqual(['failed', 'online']);
  });

  test('the last online member is never failed: its errors are the I/O\'s', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([a, b]);
    const ch = raid1Bdev.open(d, context({ a: fa, b: fb }));
    fa.fail[IoOp.WRITE] = EIO;
    fb.fail[IoOp.WRITE] = EIO;
    const seen: number[] = [];
    ch.submit(io(IoOp.WRITE, 0, 4096, (x) => seen.push(x.status)));
    fa.poll();
    fb.poll();
    expect(seen).toEqual([EIO]);
    expect(states(d).filter((s) => s === 'online')).toHaveLength(1);
    expect(raidStatus(d).state).toBe('online');
    expect(() => raidRemoveMember(d, states(d)[0] === 'online' ? 'a' : 'b')).toThrow(/last online member of raid1 r0/);
  });

  test('a flush goes to the members that flush; one that cannot is left out', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([a, desc('b', 4 * MiB, { caps: { flush: false, discard: true, writeZeroes: true } })]);
    const ch = raid1Bdev.open(d, context({ a: fa, b: fb }));
    const seen: number[] = [];
    ch.submit(io(IoOp.FLUSH, 0, 0, (x) => seen.push(x.status)));
    expect(fa.submitted).toHaveLength(1);
    expect(fb.submitted).toHaveLength(0);
    fa.poll();
    expect(seen).toEqual([0]);
  });

  test('while a chunk is copied, a write into it waits and then goes to both; a write elsewhere does not wait', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([desc('a', 4 * MiB), desc('b', 4 * MiB)]);
    const ch = raid1Bdev.open(d, context({ a: fa, b: fb }));
    raidRemoveMember(d, 'b');
    raidAddMember(d, 'b');
    expect(states(d)).toEqual(['online', 'rebuilding']);
    expect(raidStatus(d).process).toMatchObject({ type: 'rebuild', target: 'b', progress: { blocks: 0, percent: 0 } });
    ch.poll(); // takes the rebuild, locks chunk 0 and reads it from a
    expect(fa.submitted).toEqual([{ op: IoOp.READ, off: 0, len: CHUNK_BYTES, unmap: false }]);
    const seen: number[] = [];
    expect(ch.submit(io(IoOp.WRITE, 4096, 4096, (x) => seen.push(x.status)))).toBe(0);
    expect(ch.submit(io(IoOp.WRITE, CHUNK_BYTES + 4096, 4096, (x) => seen.push(x.status)))).toBe(0);
    // Only the write past the locked chunk went out, to both members.
    expect(fa.submitted.filter((s) => s.op === IoOp.WRITE).map((s) => s.off)).toEqual([CHUNK_BYTES + 4096]);
    expect(fb.submitted.filter((s) => s.op === IoOp.WRITE).map((s) => s.off)).toEqual([CHUNK_BYTES + 4096]);
    fa.poll(); // the copy's read is done: its write goes to b
    expect(fb.submitted.at(-1)).toEqual({ op: IoOp.WRITE, off: 0, len: CHUNK_BYTES, unmap: false });
    fb.poll(); // copy written (and the other write done): the lock moves on
    ch.poll(); // the waiting write goes now, after the copy
    expect(fa.submitted.filter((s) => s.op === IoOp.WRITE).map((s) => s.off)).toEqual([CHUNK_BYTES + 4096, 4096]);
    expect(fb.submitted.filter((s) => s.op === IoOp.WRITE).map((s) => s.off)).toEqual([CHUNK_BYTES + 4096, 0, 4096]);
    for (let i = 0; i < 20; i++) {
      fa.poll();
      fb.poll();
      ch.poll();
    }
    expect(seen).toEqual([0, 0]);
    expect(states(d)).toEqual(['online', 'online']);
    expect(raidStatus(d).process).toBeUndefined();
    // A rebuilt member counts again: a write it fails is no longer fatal to the mirror.
    expect(raidStatus(d).num_base_bdevs_operational).toBe(2);
  });

  test('a target that fails its copy write stops the rebuild; it can be added again', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([desc('a', 2 * MiB), desc('b', 2 * MiB)]);
    const ctx = context({ a: fa, b: fb });
    const ch = raid1Bdev.open(d, ctx);
    raidRemoveMember(d, 'b');
    raidAddMember(d, 'b');
    fb.fail[IoOp.WRITE] = EIO;
    for (let i = 0; i < 10; i++) {
      ch.poll();
      fa.poll();
      fb.poll();
    }
    expect(states(d)).toEqual(['online', 'failed']);
    expect(raidStatus(d).process).toBeUndefined();
    expect(ctx.logs.some((l) => /member b failed a rebuild write/.test(l))).toBe(true);
    fb.fail = {};
    raidAddMember(d, 'b');
    for (let i = 0; i < 20; i++) {
      ch.poll();
      fa.poll();
      fb.poll();
    }
    expect(states(d)).toEqual(['online', 'online']);
  });

  test('two reactors: a write that succeeded only on a member another reactor failed meanwhile is an error, not a success', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([desc('a', 2 * MiB), desc('b', 2 * MiB)]);
    const ch1 = raid1Bdev.open(d, context({ a: fa, b: fb }));
    const [ga, gb] = [new FakeChannel(), new FakeChannel()];
    const ch2 = raid1Bdev.open(d, context({ a: ga, b: gb }));
    const seen: number[] = [];
    ch1.submit(io(IoOp.WRITE, 0, 4096, (x) => seen.push(x.status)));
    // Reactor 2 fails a on a read error (b serves the read).
    ga.fail[IoOp.READ] = EIO;
    ch2.submit(io(IoOp.READ, 0, 4096));
    ga.poll();
    gb.poll();
    expect(states(d)).toEqual(['failed', 'online']);
    // The write lands on a, fails on b, which is now the last online member: nobody online holds it.
    fb.fail[IoOp.WRITE] = EIO;
    fa.poll();
    fb.poll();
    expect(seen).toEqual([EIO]);
    expect(states(d)).toEqual(['failed', 'online']);
  });

  test('a write waiting for another reactor\'s copy keeps its reactor polling (nothing else would wake it)', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([desc('a', 2 * MiB), desc('b', 2 * MiB)]);
    const owner = raid1Bdev.open(d, context({ a: fa, b: fb }));
    const [ga, gb] = [new FakeChannel(), new FakeChannel()];
    const other = raid1Bdev.open(d, context({ a: ga, b: gb }));
    raidRemoveMember(d, 'b');
    raidAddMember(d, 'b');
    owner.poll(); // locks chunk 0, reads it
    expect(other.poll()).toBe(0); // not the owner: nothing to do
    const seen: number[] = [];
    expect(other.submit(io(IoOp.WRITE, 0, 4096, (x) => seen.push(x.status)))).toBe(0);
    expect(ga.submitted).toHaveLength(0);
    expect(other.poll()).toBeGreaterThan(0);
    fa.poll();
    fb.poll();
    other.poll(); // the lock moved on: the write goes
    expect(ga.submitted).toHaveLength(1);
    expect(gb.submitted).toHaveLength(1);
    ga.poll();
    gb.poll();
    expect(seen).toEqual([0]);
  });

  test('a rebuild whose channel closes during a copy is called off: the member is failed, to be added again', () => {
    const [fa, fb] = [new FakeChannel(), new FakeChannel()];
    const d = mirror([desc('a', 2 * MiB), desc('b', 2 * MiB)]);
    const ctx = context({ a: fa, b: fb });
    const ch = raid1Bdev.open(d, ctx);
    raidRemoveMember(d, 'b');
    raidAddMember(d, 'b');
    ch.poll(); // copy read under way
    ch.close();
    expect(states(d)).toEqual(['online', 'failed']);
    expect(ctx.logs.some((l) => /stopped: the reactor that ran it stopped serving the mirror during a copy/.test(l))).toBe(true);
    raidAddMember(d, 'b');
    expect(states(d)).toEqual(['online', 'rebuilding']);
  });

  test('member operations are refused with what is wrong', () => {
    const d = mirror([desc('a', 2 * MiB), desc('b', 2 * MiB)]);
    expect(() => raidAddMember(d, 'a')).toThrow(/member a of raid1 r0 is online; only a failed member is added back/);
    expect(() => raidAddMember(d, 'c')).toThrow(/'c' is not a member of raid1 r0 \(its members: a, b\)/);
    raidRemoveMember(d, 'a');
    expect(() => raidRemoveMember(d, 'a')).toThrow(/failed already/);
    expect(() => raidRemoveMember(d, 'b')).toThrow(/last online member/);
  });

  test('specs: members named, 2 or more, distinct, not the mirror itself; members of one block size and writable', () => {
    expect(raid1Bdev.normalize({ name: 'r', members: 'x+y+z' })).toEqual({ name: 'r', members: 'x+y+z' });
    expect(() => raid1Bdev.normalize({ name: 'r', members: 'x' })).toThrow(/must name 2\.\.32 bdevs joined by '\+'/);
    expect(() => raid1Bdev.normalize({ name: 'r', members: 'x+x' })).toThrow(/member x is named twice/);
    expect(() => raid1Bdev.normalize({ name: 'x', members: 'x+y' })).toThrow(/one of its own members/);
    expect(() => raid1Bdev.normalize({ name: 'r' })).toThrow(/members/);
    expect(() => raid1Bdev.create({ name: 'r', members: 'a+b' }, [desc('a', MiB), desc('b', MiB, { blockSize: 4096 })])).toThrow(/different block sizes/);
    expect(() => raid1Bdev.create({ name: 'r', members: 'a+b' }, [desc('a', MiB), desc('b', MiB, { readonly: true })])).toThrow(/read-only/);
  });
});

describe('raid1 over malloc members', () => {
  test('a member failed while data is written, added back and rebuilt under more writes: both members hold the same bytes', () => {
    const size = 3 * CHUNK_BYTES + 64 * 1024; // a short last chunk
    const mk = (name: string) => mallocBdev.create(mallocBdev.normalize({ name, size: String(size) }), []) as BdevDesc;
    const [ma, mb] = [mk('ma'), mk('mb')];
    const [ca, cb] = [mallocBdev.open(ma, context({})), mallocBdev.open(mb, context({}))];
    const d = mirror([ma, mb]);
    const ch = raid1Bdev.open(d, context({ ma: ca, mb: cb }));
    const buf = hostBuffer(size);
    const pass = () => {
      ca.poll();
      cb.poll();
      ch.poll();
    };
    let done = 0;
    const write = (off: number, len: number, value: number) => {
      buf.bytes.fill(value, off, off + len);
      expect(ch.submit(io(IoOp.WRITE, off, len, (x) => (expect(x.status).toBe(0), done++), buf.addr + off))).toBe(0);
    };
    write(0, 8192, 1);
    pass();
    raidRemoveMember(d, 'mb');
    write(CHUNK_BYTES - 4096, 8192, 2); // straddles chunks 0 and 1: mb misses it
    write(size - 4096, 4096, 3);
    pass();
    raidAddMember(d, 'mb');
    let rounds = 0;
    while (raidStatus(d).process && rounds++ < 1000) {
      if (rounds % 2 === 0) write(((rounds * 12288) % (size - 4096)) & ~4095, 4096, 4 + (rounds % 200));
      pass();
    }
    for (let i = 0; i < 5; i++) pass();
    expect(states(d)).toEqual(['online', 'online']);
    expect(ch.inflight()).toBe(0);
    // Read each member directly.
    const readAll = (c: Channel, at: number) => {
      c.submit(io(IoOp.READ, 0, size, () => done++, at));
      c.poll();
    };
    const out = hostBuffer(2 * size);
    readAll(ca, out.addr);
    readAll(cb, out.addr + size);
    expect(Buffer.compare(out.bytes.subarray(0, size), out.bytes.subarray(size))).toBe(0);
    expect(Buffer.compare(out.bytes.subarray(0, size), buf.bytes.subarray(0, size))).toBe(0);
    ch.close();
    ca.close();
    cb.close();
    out.free();
    buf.free();
    mallocBdev.destroy(ma);
    mallocBdev.destroy(mb);
  });
});

describe('raid1 in the registry', () => {
  test('members are claimed: not exported writable, not deleted; save_config writes bdev_raid_create', async () => {
    const reg = new BdevRegistry(pino({ level: 'silent' }));
    await reg.create({ type: 'malloc', name: 'm0', size: String(4 * MiB) });
    await reg.create({ type: 'malloc', name: 'm1', size: String(4 * MiB) });
    const { entry } = await reg.create({ type: 'raid1', name: 'r0', members: 'm0+m1' }, 'bdev_raid_create');
    expect(entry.bases).toEqual(['m0', 'm1']);
    expect(() => reg.claim('m1', 'vhost controller x')).toThrow(/claimed for writing by raid1 r0/);
    await expect(reg.delete('m0')).rejects.toThrow(/claimed by raid1 r0/);
    await reg.create({ type: 'malloc', name: 'm2', size: String(4 * MiB) });
    await expect(reg.create({ type: 'raid1', name: 'r1', members: 'm2+nope' })).rejects.toThrow(/no bdev 'nope'/);
    expect(reg.get('m2').claims.size).toBe(0); // the member it did claim is given back
    expect(bdevConfigEntries(reg.list()).filter((e) => e.method === 'bdev_raid_create')).toEqual([
      { method: 'bdev_raid_create', params: { name: 'r0', raid_level: 'raid1', base_bdevs: ['m0', 'm1'], uuid: entry.uuid } },
    ]);
    await reg.delete('r0');
    await reg.delete('m0');
    await reg.clear();
  });
});

describe('raid1 member states across a restart (state dir)', () => {
  test('a member out of step stays failed in the next vdx; a record of other members is ignored; a deleted mirror\'s record goes', async () => {
    const { mkdtempSync, existsSync, readFileSync, rmSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { RaidStates } = await import('../../src/control/raid-state.js');
    const dir = mkdtempSync(join(tmpdir(), 'vdx-raid-state-'));
    const log = pino({ level: 'silent' });
    const daemon = async () => {
      const states = new RaidStates(dir, log);
      const reg = new BdevRegistry(log, () => {}, (e) => states.restore(e));
      await reg.create({ type: 'malloc', name: 'm0', size: String(4 * MiB) });
      await reg.create({ type: 'malloc', name: 'm1', size: String(4 * MiB) });
      const { entry } = await reg.create({ type: 'raid1', name: 'r0', members: 'm0+m1' });
      return { states, reg, entry };
    };
    const first = await daemon();
    first.states.sync(first.reg.list());
    raidRemoveMember(first.entry.desc, 'm1');
    first.states.sync(first.reg.list());
    expect(JSON.parse(readFileSync(join(dir, 'raid1-r0.json'), 'utf8'))).toEqual({ members: ['m0', 'm1'], outOfStep: ['m1'] });
    await first.reg.clear();

    const second = await daemon();
    expect(states(second.entry.desc)).toEqual(['online', 'failed']);
    raidAddMember(second.entry.desc, 'm1'); // rebuilding is out of step too
    second.states.sync(second.reg.list());
    expect(JSON.parse(readFileSync(join(dir, 'raid1-r0.json'), 'utf8')).outOfStep).toEqual(['m1']);
    await second.reg.clear();

    writeFileSync(join(dir, 'raid1-r0.json'), JSON.stringify({ members: ['x', 'y'], outOfStep: ['y'] }));
    const third = await daemon();
    expect(states(third.entry.desc)).toEqual(['online', 'online']);
    third.states.sync(third.reg.list());
    await third.reg.delete('r0');
    third.states.sync(third.reg.list());
    expect(existsSync(join(dir, 'raid1-r0.json'))).toBe(false);
    await third.reg.clear();
    rmSync(dir, { recursive: true, force: true });
  });
});
