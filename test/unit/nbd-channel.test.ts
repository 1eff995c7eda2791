// The nbd channel driven directly (no reactor): against qemu-nbd and nbdkit for
// splitting, multi-conn flush fan-out, reconnect and the reconnect timeout,
// and against a scripted hostile server. Needs the native addon and the servers.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { NBD_FLAG_HAS_FLAGS, NBD_FLAG_SEND_FLUSH, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC } from '../../src/bdev/nbd/codec.js';
import { IHAVEOPT, NBDMAGIC, NBD_OPT_REPLY_MAGIC, NBD_REP_ACK, NBD_REP_INFO } from '../../src/bdev/nbd/handshake.js';
import { nbdBdev } from '../../src/bdev/nbd/index.js';
import { BdevIo, type BdevDesc, type Channel, IoOp, type IoOpCode } from '../../src/bdev/types.js';
import { loadNative, type Mapping } from '../../src/native/index.js';

const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
let built = true;
try {
  loadNative();
} catch {
  built = false;
}
const haveServers = built && have('qemu-nbd') && have('nbdkit');

const procs: ChildProcess[] = [];
let dir = '';
let mem: Mapping;
let u8: Uint8Array;
const MiB = 1 << 20;

beforeAll(() => {
  if (!built) return;
  dir = mkdtempSync(join(tmpdir(), 'vdx-nbdch-'));
  const n = loadNative();
  mem = n.mmap(-1, 0, 8 * MiB, n.PROT_READ | n.PROT_WRITE, n.MAP_PRIVATE | n.MAP_ANONYMOUS);
  u8 = new Uint8Array(mem.buffer);
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});
const open: Channel[] = [];
afterEach(async () => {
  for (const c of open.splice(0)) c.close();
  for (const p of procs.splice(0)) {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGKILL');
      await new Promise((r) => p.once('exit', r));
    }
  }
});

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function server(cmd: string, args: string[], sock: string): Promise<ChildProcess> {
  rmSync(sock, { force: true });
  const p = spawn(cmd, args, { stdio: 'ignore' });
  procs.push(p);
  await waitFor(() => existsSync(sock));
  // The path exists from bind(); a connect before the server's listen() is refused. Wait for one to be taken.
  const end = Date.now() + 10_000;
  while (!(await accepts(sock))) {
    if (Date.now() > end || p.exitCode !== null) throw new Error(`${cmd} does not accept connections on ${sock}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return p;
}

/** Does a unix socket take a connection? (closed again at once) */
function accepts(sock: string): Promise<boolean> {
  return new Promise((res) => {
    const c = createConnection(sock);
    c.once('connect', () => {
      c.destroy();
      res(true);
    });
    c.once('error', () => res(false));
  });
}
const qemuNbd = (sock: string, img: string) => server('qemu-nbd', ['-t', '-f', 'raw', '--discard=unmap', '-k', sock, img], sock);

async function bdev(spec: Record<string, string>): Promise<BdevDesc> {
  return nbdBdev.create(nbdBdev.normalize({ name: 'n0', ...spec }));
}
/** What the channels logged (through the reactor, in the daemon). */
const logged: { level: string; msg: string; data?: Record<string, unknown> }[] = [];
function channel(d: BdevDesc): Channel {
  const c = nbdBdev.open(structuredClone(d), { log: (level, msg, data) => logged.push({ level, msg, data }) });
  open.push(c);
  return c;
}

/** An I/O over `segs` segments of the test mapping starting at bufOff. */
function io(op: IoOpCode, off: number, len: number, bufOff = 0, segs = 1): BdevIo {
  const b = new BdevIo();
  b.op = op;
  b.offsetBytes = off;
  b.lenBytes = len;
  b.niov = op === IoOp.READ || op === IoOp.WRITE ? segs : 0;
  for (let i = 0; i < b.niov; i++) {
    b.iov[2 * i] = mem.addr + bufOff + (i * len) / segs;
    b.iov[2 * i + 1] = len / segs;
  }
  return b;
}

/** Submit and poll (letting the event loop run for fake servers) until every I/O completed; their statuses. */
function run(ch: Channel, ...ios: BdevIo[]): Promise<number[]> {
  return runWithin(30_000, ch, ...ios);
}
async function runWithin(ms: number, ch: Channel, ...ios: BdevIo[]): Promise<number[]> {
  let left = ios.length;
  for (const b of ios) {
    b.done = () => left--;
    expect(ch.submit(b)).toBe(0);
  }
  const end = Date.now() + ms;
  while (left > 0) {
    ch.poll();
    if (Date.now() > end) throw new Error(`${left} I/O never completed`);
    await new Promise((r) => setImmediate(r));
  }
  expect(ch.inflight()).toBe(0);
  return ios.map((b) => b.status);
}

const pattern = (at: number, len: number, seed: number) => {
  for (let i = 0; i < len; i++) u8[at + i] = (i * 31 + seed) & 0xff;
};
const same = (a: number, b: number, len: number) => Buffer.compare(Buffer.from(u8.buffer, a, len), Buffer.from(u8.buffer, b, len)) === 0;

describe.skipIf(!haveServers)('nbd channel against real servers', () => {
  test('qemu-nbd: split I/O over several segments, flush, write zeroes, discard, holes', async () => {
    const img = join(dir, 'q.img');
    writeFileSync(img, '');
    truncateSync(img, 16 * MiB);
    const sock = join(dir, 'q.sock');
    await qemuNbd(sock, img);
    const d = await bdev({ uri: `nbd+unix:///?socket=${sock}` });
    expect(d.info).toMatchObject({ sizeBytes: 16 * MiB, blockSize: 512, caps: { flush: true, discard: true, writeZeroes: true } });
    d.params.maxIoBytes = 8192; // force splitting: one 1 MiB I/O becomes 128 requests
    const ch = channel(d);
    pattern(0, MiB, 7);
    expect(await run(ch, io(IoOp.WRITE, 4096, MiB, 0, 256), io(IoOp.FLUSH, 0, 0))).toEqual([0, 0]);
    expect(await run(ch, io(IoOp.READ, 4096, MiB, 2 * MiB, 128))).toEqual([0]);
    expect(same(0, 2 * MiB, MiB)).toBe(true);
    expect(readFileSync(img).subarray(4096, 4096 + MiB).equals(Buffer.from(u8.buffer, 0, MiB))).toBe(true);
    expect(await run(ch, io(IoOp.WRITE_ZEROES, 4096, 65536), io(IoOp.DISCARD, 8 * MiB, MiB))).toEqual([0, 0]);
    u8.fill(0xee, 4 * MiB, 4 * MiB + 131072);
    expect(await run(ch, io(IoOp.READ, 0, 131072, 4 * MiB, 2))).toEqual([0]);
    expect(u8.subarray(4 * MiB, 4 * MiB + 4096 + 65536).every((x) => x === 0)).toBe(true);
    expect(same(4 * MiB + 4096 + 65536, 65536, 131072 - 4096 - 65536)).toBe(true);
    expect(ch.kernelInflight()).toBe(0);
  });

  test('nbdkit multi-conn: connections=3 opens three, FLUSH goes to each', async () => {
    const sock = join(dir, 'k.sock');
    const logf = join(dir, 'k.log');
    await server('nbdkit', ['-f', '-U', sock, '--filter=log', 'memory', '16M', `logfile=${logf}`], sock);
    const d = await bdev({ path: sock, connections: '3' });
    expect(d.params.connections).toBe(3);
    const ch = channel(d);
    // The connections come up in the background, and a flush fans out to those that are up
    // (a write went to none of the others): wait for all three, or a loaded machine sees one.
    const ready = () => (ch as unknown as { ready: number }).ready;
    for (const end = Date.now() + 10_000; ready() < 3 && Date.now() < end; ) {
      ch.poll();
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(ready()).toBe(3);
    pattern(0, 65536, 3);
    // Enough writes that every connection gets some, then one flush.
    const writes = Array.from({ length: 12 }, (_, i) => io(IoOp.WRITE, i * 65536, 65536));
    expect(await run(ch, ...writes)).toEqual(writes.map(() => 0));
    expect(await run(ch, io(IoOp.FLUSH, 0, 0))).toEqual([0]);
    const flushConns = new Set(
      readFileSync(logf, 'utf8')
        .split('\n')
        .filter((l) => /Flush/.test(l) && /\.\.\./.test(l))
        .map((l) => /connection=(\d+)/.exec(l)?.[1]),
    );
    expect(flushConns.size).toBe(3);
  });

  test('server killed and restarted: in-flight and new I/O wait and complete; data persisted', async () => {
    const img = join(dir, 'r.img');
    writeFileSync(img, '');
    truncateSync(img, 16 * MiB);
    const sock = join(dir, 'r.sock');
    const q = await qemuNbd(sock, img);
    const ch = channel(await bdev({ path: sock, 'reconnect-timeout': '20' }));
    pattern(0, 65536, 9);
    expect(await run(ch, io(IoOp.WRITE, 0, 65536))).toEqual([0]);
    q.kill('SIGKILL');
    await new Promise((r) => q.once('exit', r));
    const pending = run(ch, io(IoOp.READ, 0, 65536, MiB));
    await new Promise((r) => setTimeout(r, 700));
    await qemuNbd(sock, img);
    expect(await pending).toEqual([0]);
    expect(same(0, MiB, 65536)).toBe(true);
  });

  test('server stays down: I/O fails with EIO after reconnect-timeout, then fails fast; back when the server is', async () => {
    const img = join(dir, 't.img');
    writeFileSync(img, '');
    truncateSync(img, 16 * MiB);
    const sock = join(dir, 't.sock');
    const q = await qemuNbd(sock, img);
    const ch = channel(await bdev({ path: sock, 'reconnect-timeout': '1' }));
    expect(await run(ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([0]);
    q.kill('SIGKILL');
    await new Promise((r) => q.once('exit', r));
    let t0 = Date.now();
    expect(await run(ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([-5]);
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(900);
    expect(waited).toBeLessThan(3000);
    t0 = Date.now();
    expect(await run(ch, io(IoOp.WRITE, 0, 4096))).toEqual([-5]);
    expect(Date.now() - t0).toBeLessThan(200);
    // While down, a timer (retry back-off) is armed: the reactor may sleep on notifyFd.
    expect(ch.kernelInflight()).toBeGreaterThan(0);
    await qemuNbd(sock, img);
    // A reactor sleeps on notifyFd and polls when the retry timer fires; here we poll through the back-off cap.
    for (const end = Date.now() + 2500; Date.now() < end; ) {
      ch.poll();
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(await run(ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([0]);
  });

  test('server stops replying (SIGSTOP): io-timeout drops the connection; EIO after io-timeout + reconnect-timeout; serves again after SIGCONT', async () => {
    const img = join(dir, 's.img');
    writeFileSync(img, '');
    truncateSync(img, 16 * MiB);
    const sock = join(dir, 's.sock');
    const q = await qemuNbd(sock, img);
    const ch = channel(await bdev({ path: sock, 'io-timeout': '1', 'reconnect-timeout': '1', 'connect-timeout': '0.5' }));
    expect(await run(ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([0]);
    logged.length = 0;
    q.kill('SIGSTOP');
    try {
      // The stopped server's listen backlog still takes connects; only the handshake deadline ends them.
      const t0 = Date.now();
      expect(await run(ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([-5]);
      const waited = Date.now() - t0;
      expect(waited).toBeGreaterThanOrEqual(1800);
      expect(waited).toBeLessThan(4000);
      expect(logged.some((l) => l.msg === 'nbd connection lost; reconnecting' && /io-timeout/.test(String(l.data?.why)))).toBe(true);
    } finally {
      q.kill('SIGCONT');
    }
    // Failing fast until a connection is back; the retry timer brings it back.
    let st = -5;
    for (const end = Date.now() + 10_000; st !== 0 && Date.now() < end; ) {
      for (const e = Date.now() + 200; Date.now() < e; ) {
        ch.poll();
        await new Promise((r) => setTimeout(r, 10));
      }
      [st] = await run(ch, io(IoOp.READ, 0, 4096, MiB));
    }
    expect(st).toBe(0);
  });

  test('server stalls for less than reconnect-timeout: the request is retried on a new connection and succeeds', async () => {
    const img = join(dir, 'p.img');
    writeFileSync(img, '');
    truncateSync(img, 16 * MiB);
    const sock = join(dir, 'p.sock');
    const q = await qemuNbd(sock, img);
    const ch = channel(await bdev({ path: sock, 'io-timeout': '1', 'reconnect-timeout': '20', 'connect-timeout': '1' }));
    pattern(0, 65536, 5);
    expect(await run(ch, io(IoOp.WRITE, 0, 65536))).toEqual([0]);
    logged.length = 0;
    q.kill('SIGSTOP');
    const t0 = Date.now();
    const pending = run(ch, io(IoOp.READ, 0, 65536, MiB));
    setTimeout(() => q.kill('SIGCONT'), 1500);
    expect(await pending).toEqual([0]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    expect(same(0, MiB, 65536)).toBe(true);
    expect(logged.some((l) => /io-timeout/.test(String(l.data?.why)))).toBe(true);
    expect(logged.some((l) => l.msg === 'nbd connection restored')).toBe(true);
  });
});

// ---------------------------------------------------------------- scripted server

interface FakeOpts {
  /** export size and transmission flags a connection announces */
  info?: (conn: number) => { size: number; flags: number };
  /** instead of the NBD_OPT_GO reply: write these bytes (a hostile handshake) */
  goReply?: (s: Socket, conn: number) => boolean;
  /** a WRITE header arrived (its payload may not have): true if answered here (the payload is then skipped) */
  onWriteHeader?: (s: Socket, hdr: Buffer, conn: number) => boolean;
  allowHalfOpen?: boolean;
  onSocket?: (s: Socket, conn: number) => void;
}

/** A fake fixed-newstyle server; `onRequest` answers each transmission request. Connection 0 is create()'s probe. */
function fakeServer(sock: string, onRequest: (s: Socket, hdr: Buffer, conn: number) => void, o: FakeOpts = {}): Promise<Server> {
  let conns = 0;
  const srv = createServer({ allowHalfOpen: o.allowHalfOpen ?? false }, (s) => {
    const conn = conns++;
    o.onSocket?.(s, conn);
    let buf = Buffer.alloc(0);
    let phase = 0;
    let skip = 0;
    const g = Buffer.alloc(18);
    g.writeBigUInt64BE(NBDMAGIC, 0);
    g.writeBigUInt64BE(IHAVEOPT, 8);
    g.writeUInt16BE(3, 16);
    s.write(g);
    const optReply = (opt: number, type: number, data: Buffer) => {
      const h = Buffer.alloc(20);
      h.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
      h.writeUInt32BE(opt, 8);
      h.writeUInt32BE(type, 12);
      h.writeUInt32BE(data.length, 16);
      s.write(Buffer.concat([h, data]));
    };
    s.on('error', () => {});
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (phase === 0) {
          if (buf.length < 4) return;
          buf = buf.subarray(4);
          phase = 1;
        } else if (phase === 1) {
          if (buf.length < 16) return;
          const opt = buf.readUInt32BE(8);
          const len = buf.readUInt32BE(12);
          if (buf.length < 16 + len) return;
          buf = buf.subarray(16 + len);
          if (opt === 8) optReply(8, NBD_REP_ACK, Buffer.alloc(0));
          else if (opt === 7) {
            if (o.goReply?.(s, conn)) return;
            const { size, flags } = o.info?.(conn) ?? { size: MiB, flags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH };
            const info = Buffer.alloc(12);
            info.writeUInt16BE(0, 0);
            info.writeBigUInt64BE(BigInt(size), 2);
            info.writeUInt16BE(flags, 10);
            optReply(7, NBD_REP_INFO, info);
            optReply(7, NBD_REP_ACK, Buffer.alloc(0));
            phase = 2;
          }
        } else {
          if (skip > 0) {
            const k = Math.min(skip, buf.length);
            buf = buf.subarray(k);
            skip -= k;
            if (skip > 0) return;
            continue;
          }
          if (buf.length < 28) return;
          const hdr = buf.subarray(0, 28);
          const type = hdr.readUInt16BE(6);
          const len = type === 1 ? hdr.readUInt32BE(24) : 0;
          if (type === 1 && o.onWriteHeader?.(s, Buffer.from(hdr), conn)) {
            buf = buf.subarray(28);
            skip = len;
            continue;
          }
          if (buf.length < 28 + len) return;
          buf = buf.subarray(28 + len);
          if (type !== 2) onRequest(s, Buffer.from(hdr), conn); // NBD_CMD_DISC: the probe's goodbye
        }
      }
    });
  });
  rmSync(sock, { force: true });
  return new Promise((res) => srv.listen(sock, () => res(srv)));
}

function chunkFor(hdr: Buffer, flags: number, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  hdr.copy(h, 8, 8, 16);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}
function dataFor(hdr: Buffer, rel: number, data: Buffer): Buffer {
  const p = Buffer.alloc(8);
  p.writeBigUInt64BE(hdr.readBigUInt64BE(16) + BigInt(rel), 0);
  return chunkFor(hdr, 1, 1, Buffer.concat([p, data]));
}

describe.skipIf(!built)('nbd channel against a hostile server', () => {
  test('bad magic drops the connection; the request is retried on a new one and succeeds', async () => {
    const sock = join(dir, 'h1.sock');
    let reqs = 0;
    const srv = await fakeServer(sock, (s, hdr) => {
      if (reqs++ === 0) s.write(Buffer.alloc(20, 0x41)); // garbage
      else s.write(dataFor(hdr, 0, Buffer.alloc(hdr.readUInt32BE(24), 0x5c)));
    });
    try {
      const ch = channel(await bdev({ path: sock }));
      expect(await run(ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([0]);
      expect(u8.subarray(MiB, MiB + 4096).every((x) => x === 0x5c)).toBe(true);
      expect(reqs).toBe(2);
    } finally {
      srv.close();
    }
  });

  test('data outside the request fails that request with EIO (not retried forever); others are requeued', async () => {
    const sock = join(dir, 'h2.sock');
    let first = true;
    const srv = await fakeServer(sock, (s, hdr) => {
      const len = hdr.readUInt32BE(24);
      if (hdr.readUInt16BE(6) === 3) {
        const r = Buffer.alloc(16);
        r.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
        hdr.copy(r, 8, 8, 16);
        s.write(r);
      } else if (first) {
        first = false;
        s.write(dataFor(hdr, len, Buffer.alloc(512))); // past the end of the read
      }
    });
    try {
      const ch = channel(await bdev({ path: sock }));
      const st = await run(ch, io(IoOp.READ, 0, 4096, MiB), io(IoOp.FLUSH, 0, 0));
      expect(st).toEqual([-5, 0]);
    } finally {
      srv.close();
    }
  });

  test('unknown cookie and a simple reply to a structured read are violations too', async () => {
    const sock = join(dir, 'h3.sock');
    let n = 0;
    const srv = await fakeServer(sock, (s, hdr) => {
      const r = Buffer.alloc(16);
      r.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
      if (n++ === 0) r.writeUInt32BE(0xdead, 12); // unknown cookie: dropped, the read is requeued
      else hdr.copy(r, 8, 8, 16); // simple reply to a read after structured replies: that read fails
      s.write(r);
    });
    try {
      const ch = channel(await bdev({ path: sock }));
      expect(await run(ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([-5]);
      expect(n).toBe(2);
    } finally {
      srv.close();
    }
  });
});

// ---------------------------------------------------------------- review mends

const simpleOk = (hdr: Buffer) => {
  const r = Buffer.alloc(16);
  r.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  hdr.copy(r, 8, 8, 16);
  return r;
};
/** Answer reads with `v` bytes, everything else with a simple OK. */
const answer = (s: Socket, hdr: Buffer, v = 0x11) =>
  s.write(hdr.readUInt16BE(6) === 0 ? dataFor(hdr, 0, Buffer.alloc(hdr.readUInt32BE(24), v)) : simpleOk(hdr));
/** NBD_REP_INFO replies (NBD_INFO_NAME, ignored by clients) adding up to `total` bytes. */
function infoFlood(total: number): Buffer {
  const name = Buffer.alloc(4000, 0x61);
  const one = Buffer.alloc(20 + 2 + name.length);
  one.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
  one.writeUInt32BE(7, 8);
  one.writeUInt32BE(NBD_REP_INFO, 12);
  one.writeUInt32BE(2 + name.length, 16);
  one.writeUInt16BE(1, 20);
  name.copy(one, 22);
  return Buffer.concat(Array.from({ length: Math.ceil(total / one.length) }, () => one));
}

describe.skipIf(!built)('nbd channel: retry bounds and handshake limits', () => {
  test('a request that makes the server drop the connection fails with EIO within io-timeout + reconnect-timeout, with back-off', async () => {
    const sock = join(dir, 'm1.sock');
    let conns = 0;
    const srv = await fakeServer(
      sock,
      (s, hdr) => {
        if (hdr.readUInt16BE(6) === 0 && hdr.readBigUInt64BE(16) === 4096n) s.destroy(); // the poison request
        else answer(s, hdr);
      },
      { onSocket: () => conns++ },
    );
    try {
      const ch = channel(await bdev({ path: sock, 'io-timeout': '0.5', 'reconnect-timeout': '1' }));
      expect(await run(ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([0]);
      const t0 = Date.now();
      expect(await runWithin(4500, ch, io(IoOp.READ, 4096, 4096, MiB))).toEqual([-5]);
      expect(Date.now() - t0).toBeLessThan(3000);
      // Connections that handshake but never serve back off like failed connects (not a tight loop).
      expect(conns).toBeLessThan(15);
    } finally {
      srv.close();
    }
  });

  test('a backend that hangs behind a live server: the write is not replayed for ever, EIO after io-timeout + reconnect-timeout', async () => {
    const sock = join(dir, 'm2.sock');
    let writes = 0;
    const srv = await fakeServer(sock, (s, hdr) => {
      if (hdr.readUInt16BE(6) === 1) writes++; // never answered
      else answer(s, hdr);
    });
    try {
      const ch = channel(await bdev({ path: sock, 'io-timeout': '0.5', 'reconnect-timeout': '1' }));
      expect(await run(ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([0]);
      const t0 = Date.now();
      expect(await runWithin(4500, ch, io(IoOp.WRITE, 0, 4096))).toEqual([-5]);
      const waited = Date.now() - t0;
      expect(waited).toBeGreaterThanOrEqual(1400);
      expect(waited).toBeLessThan(3500);
      expect(writes).toBeGreaterThanOrEqual(2);
    } finally {
      srv.close();
    }
  });

  test('a server streaming NBD_REP_INFO without end: the probe and a reconnect fail at the 64 KiB handshake cap', async () => {
    const sock = join(dir, 'm3.sock');
    const srv = await fakeServer(sock, () => {}, { goReply: (s) => (s.write(infoFlood(256 * 1024)), true) });
    try {
      await expect(bdev({ path: sock, 'connect-timeout': '3' })).rejects.toThrow(/more than 64 KiB/);
    } finally {
      srv.close();
    }
    const sock2 = join(dir, 'm3b.sock');
    const srv2 = await fakeServer(sock2, (s, hdr) => answer(s, hdr), { goReply: (s, conn) => conn > 0 && (s.write(infoFlood(256 * 1024)), true) });
    try {
      logged.length = 0;
      const ch = channel(await bdev({ path: sock2, 'connect-timeout': '5' }));
      for (const end = Date.now() + 3000; Date.now() < end && !logged.some((l) => /64 KiB/.test(String(l.data?.why))); ) {
        ch.poll();
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(logged.some((l) => l.msg === 'nbd connect failed; retrying' && /more than 64 KiB/.test(String(l.data?.why)))).toBe(true);
    } finally {
      srv2.close();
    }
  });

  test('a reply to a write still being sent is a violation: the write is resent and succeeds', async () => {
    const sock = join(dir, 'm4.sock');
    let full = 0;
    const srv = await fakeServer(
      sock,
      (s, hdr, conn) => {
        if (hdr.readUInt16BE(6) === 1 && conn > 1) full++;
        answer(s, hdr);
      },
      // The first channel connection answers a write as soon as its header arrives.
      { onWriteHeader: (s, hdr, conn) => conn === 1 && (s.write(simpleOk(hdr)), true) },
    );
    try {
      logged.length = 0;
      const ch = channel(await bdev({ path: sock }));
      expect(await run(ch, io(IoOp.WRITE, 0, 4 * MiB))).toEqual([0]);
      expect(logged.some((l) => l.msg === 'nbd connection lost; reconnecting' && /not yet fully sent/.test(String(l.data?.why)))).toBe(true);
      expect(full).toBe(1);
    } finally {
      srv.close();
    }
  });

  test('reconnect: hint flags may change and the export may grow', async () => {
    const sock = join(dir, 'm5.sock');
    const ROTATIONAL = 1 << 4;
    const SEND_DF = 1 << 7;
    const srv = await fakeServer(
      sock,
      (s, hdr, conn) => (conn === 1 ? s.write(Buffer.alloc(20, 0x41)) : answer(s, hdr, 0x22)),
      {
        info: (conn) =>
          conn <= 1
            ? { size: MiB, flags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | ROTATIONAL | SEND_DF }
            : { size: 2 * MiB, flags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH },
      },
    );
    try {
      logged.length = 0;
      const d = await bdev({ path: sock, 'reconnect-timeout': '3' });
      const ch = channel(d);
      expect(await runWithin(4500, ch, io(IoOp.READ, 0, 4096, MiB))).toEqual([0]);
      expect(u8.subarray(MiB, MiB + 4096).every((x) => x === 0x22)).toBe(true);
      expect(logged.some((l) => l.msg === 'nbd export grew; the bdev keeps its size')).toBe(true);
      expect(d.info.sizeBytes).toBe(MiB);
    } finally {
      srv.close();
    }
  });

  test('probe: a server ignoring NBD_CMD_DISC does not keep the socket; a failed name lookup carries an errno', async () => {
    const sock = join(dir, 'm6.sock');
    let closed = false;
    const srv = await fakeServer(sock, () => {}, {
      allowHalfOpen: true,
      onSocket: (s, conn) => {
        if (conn !== 0) return;
        s.on('close', () => (closed = true));
        // Never end our side; after a while poke the peer: a destroyed socket makes the write fail (EPIPE).
        s.on('end', () => setTimeout(() => s.write(Buffer.alloc(1)), 1200));
      },
    });
    try {
      await bdev({ path: sock });
      await waitFor(() => closed, 4000);
    } finally {
      srv.close();
    }
    const e = await bdev({ host: 'nonexistent.invalid' }).catch((x: unknown) => x as NodeJS.ErrnoException);
    expect(e).toBeInstanceOf(Error);
    expect((e as NodeJS.ErrnoException).message).toMatch(/cannot resolve host nonexistent.invalid/);
    expect((e as NodeJS.ErrnoException).errno).toBe(113);
  });
});
