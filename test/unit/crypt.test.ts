// crypt: the ciphertext on the base is dm-crypt plain mode's (aes-xts-plain64,
// checked against node:crypto's AES-XTS with plain64 tweaks) for both key
// sizes, both sector sizes and both IV numberings; buffers split inside a
// sector; the guest's data left as it was by a write; bad keys and I/O refused.
import { createCipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { hostBuffer } from '../../src/bdev/api.js';
import { cryptBdev } from '../../src/bdev/crypt.js';
import { mallocBdev } from '../../src/bdev/malloc.js';
import { BdevIo, type BdevDesc, type Channel, type ChannelContext, IoOp } from '../../src/bdev/types.js';

const dir = mkdtempSync(join(tmpdir(), 'vdx-crypt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function keyFile(bytes: Buffer, name = `k${bytes.length}-${Math.random()}`): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

function ctxFor(base: Channel): ChannelContext {
  return { log: () => {}, openBase: () => base, closeBase: () => {} };
}

/** dm-crypt plain mode's ciphertext of `plain` at byte `offset`: one XTS unit per sector, tweak = plain64 IV. */
function reference(key: Buffer, plain: Buffer, offset: number, sector: number, large: boolean): Buffer {
  const out = Buffer.alloc(plain.length);
  for (let s = 0; s < plain.length; s += sector) {
    const iv = Buffer.alloc(16);
    iv.writeBigUInt64LE(BigInt(large ? (offset + s) / sector : (offset + s) / 512));
    const c = createCipheriv(key.length === 32 ? 'aes-128-xts' : 'aes-256-xts', key, iv);
    c.update(plain.subarray(s, s + sector)).copy(out, s);
    c.final();
  }
  return out;
}

function rw(ch: Channel, base: Channel, op: number, offset: number, segs: [number, number][]): number {
  const io = new BdevIo();
  io.op = op as BdevIo['op'];
  io.offsetBytes = offset;
  io.lenBytes = segs.reduce((a, [, l]) => a + l, 0);
  io.niov = segs.length;
  segs.forEach(([a, l], i) => {
    io.iov[2 * i] = a;
    io.iov[2 * i + 1] = l;
  });
  let status = 1;
  io.done = (x) => (status = x.status);
  const rc = ch.submit(io);
  if (rc < 0) return rc;
  expect(status).toBe(1); // never inside submit
  base.poll();
  return status;
}

function setup(key: Buffer, sector: number, large: boolean, size = 1 << 20) {
  const m = mallocBdev.create(mallocBdev.normalize({ name: 'm0', size: String(size) }), []) as BdevDesc;
  const mc = mallocBdev.open(m, ctxFor(undefined as unknown as Channel));
  const d = cryptBdev.create(cryptBdev.normalize({ name: 'c0', base: 'm0', 'key-file': keyFile(key), 'sector-size': String(sector), 'iv-large-sectors': large ? 'on' : 'off' }), [m]) as BdevDesc;
  const ch = cryptBdev.open(d, ctxFor(mc));
  return {
    d, ch, mc,
    done() {
      ch.close();
      mc.close();
      cryptBdev.destroy(d);
      mallocBdev.destroy(m);
    },
  };
}

describe('crypt: what lands on the base is dm-crypt plain mode\'s', () => {
  for (const keyBytes of [32, 64]) {
    for (const sector of [512, 4096]) {
      for (const large of [false, true]) {
        test(`key ${keyBytes * 8} bits, sector ${sector}, iv-large-sectors ${large ? 'on' : 'off'}`, () => {
          const key = randomBytes(keyBytes);
          const { d, ch, mc, done } = setup(key, sector, large);
          expect(d.info.blockSize).toBe(sector);
          const buf = hostBuffer(5 * 8192);
          const plain = randomBytes(8192);
          buf.bytes.set(plain);
          const offset = 3 * 8192;
          expect(rw(ch, mc, IoOp.WRITE, offset, [[buf.addr, 8192]])).toBe(0);
          expect(Buffer.from(buf.bytes.subarray(0, 8192)).equals(plain)).toBe(true); // the guest's data is as it was
          // The base, read directly, holds the reference ciphertext.
          expect(rw(mc, mc, IoOp.READ, offset, [[buf.addr + 8192, 8192]])).toBe(0);
          expect(Buffer.from(buf.bytes.subarray(8192, 16384)).equals(reference(key, plain, offset, sector, large))).toBe(true);
          // Read back through crypt, into segments that split sectors (at 100, then 700 bytes in).
          const b = buf.addr + 16384;
          expect(rw(ch, mc, IoOp.READ, offset, [[b, 100], [b + 100, 700], [b + 800, 8192 - 800]])).toBe(0);
          expect(Buffer.from(buf.bytes.subarray(16384, 16384 + 8192)).equals(plain)).toBe(true);
          // A write from split segments gives the same ciphertext as one from a whole buffer.
          const src = buf.addr + 24576;
          buf.bytes.set(plain, 24576);
          expect(rw(ch, mc, IoOp.WRITE, 0, [[src, 300], [src + 300, 5], [src + 305, 8192 - 305]])).toBe(0);
          expect(rw(mc, mc, IoOp.READ, 0, [[buf.addr + 32768, 8192]])).toBe(0);
          expect(Buffer.from(buf.bytes.subarray(32768, 32768 + 8192)).equals(reference(key, plain, 0, sector, large))).toBe(true);
          buf.free();
          done();
        });
      }
    }
  }
});

describe('crypt: refusals', () => {
  test('I/O off the sector grid, discard and write-zeroes; nothing reaches the base', () => {
    const { ch, mc, done } = setup(randomBytes(64), 4096, false);
    const buf = hostBuffer(8192);
    expect(rw(ch, mc, IoOp.WRITE, 512, [[buf.addr, 4096]])).toBe(-22);
    expect(rw(ch, mc, IoOp.READ, 0, [[buf.addr, 512]])).toBe(-22);
    expect(rw(ch, mc, IoOp.READ, (1 << 20) - 4096, [[buf.addr, 8192]])).toBe(-22);
    expect(rw(ch, mc, IoOp.DISCARD, 0, [])).toBe(-95);
    buf.free();
    done();
  });

  test('keys: a wrong length, a missing file, equal halves, an unknown cipher, a base with larger blocks', () => {
    const m = mallocBdev.create(mallocBdev.normalize({ name: 'm0', size: String(1 << 20) }), []) as BdevDesc;
    const spec = (over: Record<string, string>) => cryptBdev.normalize({ name: 'c0', base: 'm0', 'key-file': keyFile(randomBytes(64)), ...over });
    expect(() => cryptBdev.create(spec({ 'key-file': keyFile(randomBytes(48)) }), [m])).toThrow(/holds 48 bytes; a raw key is 32 \(key-size 256\) or 64/);
    expect(cryptBdev.create(spec({ 'key-file': keyFile(randomBytes(100)), 'key-size': '512' }), [m]).info.name).toBe('c0'); // first 64 bytes, as cryptsetup
    expect(() => cryptBdev.create(spec({ 'key-file': join(dir, 'nope') }), [m])).toThrow(/cannot read key-file=/);
    const half = randomBytes(32);
    expect(() => cryptBdev.create(spec({ 'key-file': keyFile(Buffer.concat([half, half])) }), [m])).toThrow();
    expect(() => spec({ cipher: 'aes-cbc-essiv:sha256' })).toThrow(/vdx has aes-xts-plain64/);
    expect(() => spec({ 'sector-size': '1024' })).toThrow(/sector-size=1024 must be 512 or 4096/);
    const big = mallocBdev.create(mallocBdev.normalize({ name: 'm1', size: String(1 << 20), 'block-size': '4096' }), []) as BdevDesc;
    expect(() => cryptBdev.create(spec({ base: 'm1' }), [big])).toThrow(/4096-byte blocks, larger than sector-size=512/);
    mallocBdev.destroy(m);
    mallocBdev.destroy(big);
  });
});
