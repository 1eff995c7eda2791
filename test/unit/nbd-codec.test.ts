// The NBD client codec, handshake and spec parsing: scripted server bytes, split
// anywhere, and hostile replies (every row must drop the connection, never throw).
import { describe, expect, test } from 'vitest';
import {
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  ReplyReader,
  type ReplySink,
  SLOT_FREE,
  encodeRequest,
  makeSlotTable,
} from '../../src/bdev/nbd/codec.js';
import {
  IHAVEOPT,
  NBDMAGIC,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_REPLY_MAGIC,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NbdHandshake,
} from '../../src/bdev/nbd/handshake.js';
import { planNbd } from '../../src/bdev/nbd/index.js';
import { normalizeNbd, parseNbdUri } from '../../src/bdev/nbd/spec.js';

// ---------------------------------------------------------------- byte builders

function bytes(...parts: (Uint8Array | number[])[]): Uint8Array {
  const len = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
const u16 = (v: number) => { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, v); return b; };
const u32 = (v: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v >>> 0); return b; };
const u64 = (v: bigint | number) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(v)); return b; };

const greeting = (hflags = 3) => bytes(u64(NBDMAGIC), u64(IHAVEOPT), u16(hflags));
const optReply = (opt: number, type: number, data: Uint8Array = new Uint8Array(0)) =>
  bytes(u64(NBD_OPT_REPLY_MAGIC), u32(opt), u32(type), u32(data.length), data);
const infoExport = (size: number, flags: number) => optReply(NBD_OPT_GO, NBD_REP_INFO, bytes(u16(NBD_INFO_EXPORT), u64(size), u16(flags)));
const infoBlock = (min: number, pref: number, max: number) =>
  optReply(NBD_OPT_GO, NBD_REP_INFO, bytes(u16(NBD_INFO_BLOCK_SIZE), u32(min), u32(pref), u32(max)));

const FLAGS = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;

function drain(hs: NbdHandshake): Uint8Array {
  const out: Uint8Array[] = [];
  for (let o = hs.takeOutput(); o; o = hs.takeOutput()) out.push(o);
  return bytes(...out);
}

/** Feed whole, or one byte at a time (short reads). */
function push(hs: NbdHandshake, b: Uint8Array, byByte: boolean): void {
  if (!byByte) return hs.push(b);
  for (let i = 0; i < b.length; i++) hs.push(b.subarray(i, i + 1));
}

// ---------------------------------------------------------------- handshake

describe('handshake (fixed newstyle)', () => {
  for (const byByte of [false, true]) {
    test(`structured replies, GO with block sizes${byByte ? ', byte by byte' : ''}`, () => {
      const hs = new NbdHandshake('exp');
      push(hs, greeting(3), byByte);
      const first = drain(hs);
      // client flags FIXED_NEWSTYLE|NO_ZEROES, then NBD_OPT_STRUCTURED_REPLY with no data
      expect([...first]).toEqual([...bytes(u32(3), u64(IHAVEOPT), u32(NBD_OPT_STRUCTURED_REPLY), u32(0))]);
      push(hs, optReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK), byByte);
      const go = drain(hs);
      const name = new TextEncoder().encode('exp');
      expect([...go]).toEqual([...bytes(u64(IHAVEOPT), u32(NBD_OPT_GO), u32(4 + 3 + 2 + 2), u32(3), name, u16(1), u16(NBD_INFO_BLOCK_SIZE))]);
      push(
        hs,
        bytes(
          optReply(NBD_OPT_GO, NBD_REP_INFO, bytes(u16(NBD_INFO_NAME), new TextEncoder().encode('exp'))),
          infoExport(1 << 30, FLAGS | NBD_FLAG_CAN_MULTI_CONN),
          infoBlock(512, 4096, 1 << 20),
          optReply(NBD_OPT_GO, NBD_REP_ACK),
        ),
        byByte,
      );
      expect(hs.error).toBe('');
      expect(hs.state).toBe('done');
      expect(hs.result).toEqual({
        sizeBytes: 1 << 30,
        flags: FLAGS | NBD_FLAG_CAN_MULTI_CONN,
        structured: true,
        minBlock: 512,
        preferredBlock: 4096,
        maxPayload: 1 << 20,
        blockSizeInfo: true,
        exportNameFallback: false,
      });
    });
  }

  test('only the client flags the server offered', () => {
    const hs = new NbdHandshake('');
    hs.push(greeting(1));
    expect([...drain(hs).subarray(0, 4)]).toEqual([0, 0, 0, 1]);
  });

  test('GO unsupported: falls back to NBD_OPT_EXPORT_NAME (with and without zero padding)', () => {
    for (const hflags of [3, 1]) {
      const hs = new NbdHandshake('e1');
      hs.push(greeting(hflags));
      drain(hs);
      hs.push(optReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP));
      drain(hs);
      hs.push(optReply(NBD_OPT_GO, NBD_REP_ERR_UNSUP));
      expect([...drain(hs)]).toEqual([...bytes(u64(IHAVEOPT), u32(NBD_OPT_EXPORT_NAME), u32(2), new TextEncoder().encode('e1'))]);
      const reply = bytes(u64(4096 * 10), u16(FLAGS));
      hs.push(hflags & 2 ? reply : bytes(reply, new Uint8Array(124)));
      expect(hs.state).toBe('done');
      expect(hs.result).toMatchObject({ sizeBytes: 40960, flags: FLAGS, structured: false, exportNameFallback: true, minBlock: 512, blockSizeInfo: false });
    }
  });

  const go = (...replies: Uint8Array[]) => {
    const hs = new NbdHandshake('x');
    hs.push(greeting());
    hs.push(optReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK));
    for (const r of replies) hs.push(r);
    return hs;
  };
  const failures: [string, () => NbdHandshake, RegExp][] = [
    ['bad greeting magic', () => { const h = new NbdHandshake(''); h.push(bytes(u64(1n), u64(IHAVEOPT), u16(3))); return h; }, /bad greeting magic/],
    ['oldstyle server', () => { const h = new NbdHandshake(''); h.push(bytes(u64(NBDMAGIC), u64(0x00420281861253n), new Uint8Array(2))); return h; }, /oldstyle/],
    ['not fixed newstyle', () => { const h = new NbdHandshake(''); h.push(greeting(0)); return h; }, /not fixed newstyle/],
    ['unknown export', () => go(optReply(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, new TextEncoder().encode('no x'))), /no such export.*no x/],
    ['policy refusal', () => go(optReply(NBD_OPT_GO, NBD_REP_ERR_POLICY)), /policy/],
    ['TLS required', () => { const h = new NbdHandshake(''); h.push(greeting()); h.push(optReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_TLS_REQD)); return h; }, /requires TLS/],
    ['ACK without NBD_INFO_EXPORT', () => go(optReply(NBD_OPT_GO, NBD_REP_ACK)), /without NBD_INFO_EXPORT/],
    ['reply for another option', () => go(optReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK)), /expected 7/],
    ['bad option reply magic', () => go(bytes(u64(5n), u32(7), u32(1), u32(0))), /bad option reply magic/],
    ['oversized option reply', () => go(bytes(u64(NBD_OPT_REPLY_MAGIC), u32(7), u32(3), u32(1 << 20))), /too long/],
    ['export info of the wrong size', () => go(optReply(NBD_OPT_GO, NBD_REP_INFO, bytes(u16(NBD_INFO_EXPORT), u64(1)))), /not 12 bytes/],
    ['min block not a power of 2', () => go(infoBlock(3, 4096, 1 << 20)), /minimum block size 3/],
    ['max payload below min block', () => go(infoBlock(4096, 4096, 512)), /maximum payload/],
    ['flags without HAS_FLAGS', () => go(infoExport(4096, 4)), /HAS_FLAGS/],
    ['size beyond 2^53', () => go(optReply(NBD_OPT_GO, NBD_REP_INFO, bytes(u16(NBD_INFO_EXPORT), u64(1n << 60n), u16(1)))), /2\^53/],
    ['data after the handshake', () => go(infoExport(4096, FLAGS), bytes(optReply(NBD_OPT_GO, NBD_REP_ACK), [1])), /before any request/],
    ['unexpected reply type', () => go(optReply(NBD_OPT_GO, 2)), /unexpected reply type 2/],
    ['endless NBD_REP_INFO (64 KiB cap)', () => go(...Array.from({ length: 40 }, () => optReply(NBD_OPT_GO, NBD_REP_INFO, bytes(u16(NBD_INFO_NAME), new Uint8Array(2000))))), /more than 64 KiB/],
  ];
  for (const [name, make, why] of failures) {
    test(`fails: ${name}`, () => {
      const hs = make();
      expect(hs.state).toBe('failed');
      expect(hs.error).toMatch(why);
    });
  }
});

// ---------------------------------------------------------------- replies

const READ_SLOT = 5;
const WRITE_SLOT = 6;
const GEN = 7;
const REQ_OFF = 1 << 20;
const REQ_LEN = 8192;

interface Rec {
  data: [number, number, number[]][];
  holes: [number, number, number][];
  done: [number, number][];
}

function setup(structured = true) {
  const t = makeSlotTable(16);
  for (const [s, cmd] of [[READ_SLOT, NBD_CMD_READ], [WRITE_SLOT, NBD_CMD_WRITE]] as const) {
    t.cmd[s] = cmd;
    t.gen[s] = GEN;
    t.conn[s] = 0;
    t.offsetBytes[s] = REQ_OFF;
    t.lenBytes[s] = REQ_LEN;
    t.sent[s] = 1;
  }
  const rec: Rec = { data: [], holes: [], done: [] };
  let buf = new Uint8Array(0);
  const sink: ReplySink = {
    data: (slot, reqOffset, bufOffset, len) => rec.data.push([slot, reqOffset, [...buf.subarray(bufOffset, bufOffset + len)]]),
    hole: (slot, reqOffset, len) => rec.holes.push([slot, reqOffset, len]),
    done: (slot) => {
      rec.done.push([slot, t.err[slot]!]);
      t.cmd[slot] = SLOT_FREE; // the channel frees the slot: the cookie is gone
    },
  };
  const r = new ReplyReader(t, sink, 0, structured);
  /** feed whole or byte by byte; returns feed()'s status */
  const feed = (b: Uint8Array, byByte = false): number => {
    if (!byByte) {
      buf = b;
      return r.feed(b, 0, b.length);
    }
    for (let i = 0; i < b.length; i++) {
      buf = b;
      const rc = r.feed(b, i, 1);
      if (rc < 0) return rc;
    }
    return 0;
  };
  return { t, rec, r, feed };
}

const chunk = (flags: number, type: number, slot: number, payload: Uint8Array, gen = GEN) =>
  bytes(u32(NBD_STRUCTURED_REPLY_MAGIC), u16(flags), u16(type), u32(gen), u32(slot), u32(payload.length), payload);
const simple = (error: number, slot: number, gen = GEN) => bytes(u32(NBD_SIMPLE_REPLY_MAGIC), u32(error), u32(gen), u32(slot));
const dataChunk = (flags: number, off: number, data: number[], slot = READ_SLOT) => chunk(flags, NBD_REPLY_TYPE_OFFSET_DATA, slot, bytes(u64(off), data));
const holeChunk = (flags: number, off: number, size: number, slot = READ_SLOT) => chunk(flags, NBD_REPLY_TYPE_OFFSET_HOLE, slot, bytes(u64(off), u32(size)));
const errChunk = (flags: number, err: number, msg: string, slot = READ_SLOT) => {
  const m = new TextEncoder().encode(msg);
  return chunk(flags, NBD_REPLY_TYPE_ERROR, slot, bytes(u32(err), u16(m.length), m));
};
const DONE = NBD_REPLY_FLAG_DONE;
const fill = (n: number, v: number) => new Array<number>(n).fill(v);

describe('transmission: request header', () => {
  test('encodeRequest layout', () => {
    const b = new Uint8Array(28);
    encodeRequest(new DataView(b.buffer), 0, 2, 6, 0xabcdef01, 9, 2 ** 40 + 512, 4096);
    expect([...b]).toEqual([...bytes(u32(NBD_REQUEST_MAGIC), u16(2), u16(6), u32(0xabcdef01), u32(9), u64(2 ** 40 + 512), u32(4096))]);
  });
});

describe('transmission: replies', () => {
  for (const byByte of [false, true]) {
    const sfx = byByte ? ' (byte by byte)' : '';
    test(`read as data + hole chunks, DONE${sfx}`, () => {
      const { rec, feed } = setup();
      const stream = bytes(holeChunk(0, REQ_OFF, 4096), dataChunk(DONE, REQ_OFF + 4096, fill(4096, 0xaa)));
      expect(feed(stream, byByte)).toBe(0);
      const got = fill(REQ_LEN, -1);
      for (const [, off, d] of rec.data) d.forEach((v, i) => (got[off + i] = v));
      expect(got.slice(4096)).toEqual(fill(4096, 0xaa));
      expect(rec.holes).toEqual([[READ_SLOT, 0, 4096]]);
      expect(rec.done).toEqual([[READ_SLOT, 0]]);
    });

    test(`error chunk fails the read; error-offset too${sfx}`, () => {
      const { rec, feed } = setup();
      expect(feed(bytes(errChunk(0, 5, 'bad sector'), chunk(DONE, NBD_REPLY_TYPE_NONE, READ_SLOT, new Uint8Array(0))), byByte)).toBe(0);
      expect(rec.done).toEqual([[READ_SLOT, -5]]);
      const s2 = setup();
      const m = new TextEncoder().encode('x');
      expect(s2.feed(chunk(DONE, NBD_REPLY_TYPE_ERROR_OFFSET, READ_SLOT, bytes(u32(28), u16(1), m, u64(REQ_OFF + 512))), byByte)).toBe(0);
      expect(s2.rec.done).toEqual([[READ_SLOT, -28]]);
    });

    test(`simple replies: write ok, write ENOSPC, unknown error value -> EINVAL${sfx}`, () => {
      const { rec, t, feed } = setup();
      expect(feed(simple(0, WRITE_SLOT), byByte)).toBe(0);
      t.cmd[WRITE_SLOT] = NBD_CMD_WRITE;
      expect(feed(simple(28, WRITE_SLOT), byByte)).toBe(0);
      t.cmd[WRITE_SLOT] = NBD_CMD_WRITE;
      t.err[WRITE_SLOT] = 0;
      expect(feed(simple(1234, WRITE_SLOT), byByte)).toBe(0);
      expect(rec.done).toEqual([[WRITE_SLOT, 0], [WRITE_SLOT, -28], [WRITE_SLOT, -22]]);
    });

    test(`NONE chunk completes a write${sfx}`, () => {
      const { rec, feed } = setup();
      expect(feed(chunk(DONE, NBD_REPLY_TYPE_NONE, WRITE_SLOT, new Uint8Array(0)), byByte)).toBe(0);
      expect(rec.done).toEqual([[WRITE_SLOT, 0]]);
    });

    test(`simple read reply without structured replies carries the data${sfx}`, () => {
      const { rec, feed } = setup(false);
      expect(feed(bytes(simple(0, READ_SLOT), fill(REQ_LEN, 3)), byByte)).toBe(0);
      expect(rec.data.flatMap(([, , d]) => d)).toEqual(fill(REQ_LEN, 3));
      expect(rec.done).toEqual([[READ_SLOT, 0]]);
    });
  }

  test('interleaved replies of two requests', () => {
    const { rec, feed } = setup();
    const s = bytes(dataChunk(0, REQ_OFF, fill(4096, 1)), chunk(DONE, NBD_REPLY_TYPE_NONE, WRITE_SLOT, new Uint8Array(0)), dataChunk(DONE, REQ_OFF + 4096, fill(4096, 2)));
    expect(feed(s)).toBe(0);
    expect(rec.done).toEqual([[WRITE_SLOT, 0], [READ_SLOT, 0]]);
  });

  const m = new TextEncoder().encode('m');
  const hostile: [string, () => Uint8Array, RegExp, number, boolean?][] = [
    ['bad magic', () => bytes(u32(0x12345678), new Uint8Array(16)), /bad reply magic/, -1],
    ['unknown cookie (free slot)', () => simple(0, 3), /unknown cookie/, -1],
    ['cookie beyond the table', () => simple(0, 999), /unknown cookie/, -1],
    ['stale generation', () => simple(0, WRITE_SLOT, GEN + 1), /unknown cookie/, -1],
    ['chunk with an unknown cookie', () => dataChunk(DONE, REQ_OFF, [1], 4), /unknown cookie/, -1],
    ['oversized data chunk', () => bytes(u32(NBD_STRUCTURED_REPLY_MAGIC), u16(DONE), u16(1), u32(GEN), u32(READ_SLOT), u32(0xfffffff0)), /length outside/, READ_SLOT],
    ['data chunk before the request', () => dataChunk(DONE, REQ_OFF - 512, fill(512, 0)), /outside the request/, READ_SLOT],
    ['data chunk past the request end', () => dataChunk(DONE, REQ_OFF + REQ_LEN - 512, fill(1024, 0)), /outside the request/, READ_SLOT],
    ['data chunk at an offset beyond 2^53', () => chunk(DONE, 1, READ_SLOT, bytes(u64(1n << 62n), [0])), /outside the request/, READ_SLOT],
    ['hole outside the request', () => holeChunk(DONE, REQ_OFF + 4096, 8192), /hole chunk outside/, READ_SLOT],
    ['hole of size 0', () => holeChunk(DONE, REQ_OFF, 0), /hole chunk outside/, READ_SLOT],
    ['hole chunk of the wrong length', () => chunk(DONE, NBD_REPLY_TYPE_OFFSET_HOLE, READ_SLOT, bytes(u64(REQ_OFF), u32(512), [0])), /not 12/, READ_SLOT],
    ['overlapping chunks', () => bytes(dataChunk(0, REQ_OFF, fill(8192, 0)), holeChunk(DONE, REQ_OFF, 512)), /overlap/, READ_SLOT],
    // Chunk sizes summing to the length must not hide a gap (stale guest memory): chunks ascend, no overlap.
    ['the same data chunk twice', () => bytes(dataChunk(0, REQ_OFF, fill(4096, 1)), dataChunk(DONE, REQ_OFF, fill(4096, 1))), /overlap/, READ_SLOT],
    ['hole and data overlapping, a gap at the end', () => bytes(holeChunk(0, REQ_OFF, 4096), dataChunk(DONE, REQ_OFF + 2048, fill(4096, 1))), /overlap/, READ_SLOT],
    ['chunks out of order', () => bytes(dataChunk(0, REQ_OFF + 4096, fill(4096, 1)), holeChunk(DONE, REQ_OFF, 4096)), /out of order/, READ_SLOT],
    ['DONE before all data arrived', () => dataChunk(DONE, REQ_OFF, fill(4096, 0)), /without all of its data/, READ_SLOT],
    ['data chunk for a write', () => dataChunk(DONE, REQ_OFF, [0], WRITE_SLOT), /not a read/, WRITE_SLOT],
    ['unknown chunk type', () => chunk(DONE, 100, READ_SLOT, new Uint8Array(0)), /unknown reply chunk type/, READ_SLOT],
    ['block status chunk (never asked for)', () => chunk(DONE, 5, READ_SLOT, new Uint8Array(8)), /unknown reply chunk type/, READ_SLOT],
    ['NONE without DONE', () => chunk(0, NBD_REPLY_TYPE_NONE, WRITE_SLOT, new Uint8Array(0)), /without DONE/, WRITE_SLOT],
    ['NONE with a payload', () => chunk(DONE, NBD_REPLY_TYPE_NONE, WRITE_SLOT, new Uint8Array(4)), /with a payload/, WRITE_SLOT],
    ['error chunk with error 0', () => errChunk(DONE, 0, 'x'), /error 0/, READ_SLOT],
    ['error chunk message longer than the chunk', () => chunk(DONE, NBD_REPLY_TYPE_ERROR, READ_SLOT, bytes(u32(5), u16(100), m)), /message longer/, READ_SLOT],
    ['error chunk over 4 KiB', () => bytes(u32(NBD_STRUCTURED_REPLY_MAGIC), u16(DONE), u16(NBD_REPLY_TYPE_ERROR), u32(GEN), u32(READ_SLOT), u32(10000)), /out of bounds/, READ_SLOT],
    ['error offset outside the request', () => chunk(DONE, NBD_REPLY_TYPE_ERROR_OFFSET, READ_SLOT, bytes(u32(5), u16(1), m, u64(0))), /error offset outside/, READ_SLOT],
    ['ESHUTDOWN', () => simple(108, WRITE_SLOT), /shutting down/, -1],
    ['a chunk after DONE (cookie retired)', () => bytes(chunk(DONE, NBD_REPLY_TYPE_NONE, WRITE_SLOT, new Uint8Array(0)), chunk(DONE, NBD_REPLY_TYPE_NONE, WRITE_SLOT, new Uint8Array(0))), /unknown cookie/, -1],
    ['simple read reply after structured replies', () => simple(0, READ_SLOT), /simple reply to a read/, READ_SLOT],
    ['structured chunk without structured replies', () => chunk(DONE, NBD_REPLY_TYPE_NONE, WRITE_SLOT, new Uint8Array(0)), /without structured/, -1, false],
  ];
  for (const [name, make, why, slot, structured] of hostile) {
    for (const byByte of [false, true]) {
      test(`hostile: ${name}${byByte ? ' (byte by byte)' : ''} -> connection dropped`, () => {
        const { r, feed } = setup(structured ?? true);
        expect(feed(make(), byByte)).toBe(-71);
        expect(r.why).toMatch(why);
        expect(r.failedSlot).toBe(slot);
      });
    }
  }

  test('a reply to a request still being sent is a violation (simple and structured)', () => {
    for (const make of [() => simple(0, WRITE_SLOT), () => chunk(DONE, NBD_REPLY_TYPE_NONE, WRITE_SLOT, new Uint8Array(0))]) {
      const { t, r, rec, feed } = setup();
      t.sent[WRITE_SLOT] = 0;
      expect(feed(make())).toBe(-71);
      expect(r.why).toMatch(/not yet fully sent/);
      expect(rec.done).toEqual([]);
    }
  });

  test('a reply from another connection is a stray', () => {
    const { t, r, feed } = setup();
    t.conn[WRITE_SLOT] = 1;
    expect(feed(simple(0, WRITE_SLOT))).toBe(-71);
    expect(r.why).toMatch(/unknown cookie/);
  });

  test('seeded fuzz: random bytes never throw', () => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    for (let round = 0; round < 500; round++) {
      const { feed } = setup(round % 2 === 0);
      const prefix = round % 3 === 0 ? dataChunk(0, REQ_OFF, fill(16, 1)).subarray(0, 20) : new Uint8Array(0);
      const b = bytes(prefix, Array.from({ length: 64 + (round % 64) }, rnd));
      expect(() => feed(b, round % 5 === 0)).not.toThrow();
    }
  });
});

// ---------------------------------------------------------------- spec

describe('nbd spec and URIs', () => {
  test('URIs', () => {
    expect(parseNbdUri('nbd://127.0.0.1/exp')).toEqual({ host: '127.0.0.1', port: 10809, path: '', exportName: 'exp' });
    expect(parseNbdUri('nbd://localhost:10900')).toEqual({ host: 'localhost', port: 10900, path: '', exportName: '' });
    expect(parseNbdUri('nbd://[::1]:7000/a%20b')).toEqual({ host: '::1', port: 7000, path: '', exportName: 'a b' });
    expect(parseNbdUri('nbd+unix:///e0?socket=/run/x.sock')).toEqual({ host: '', port: 0, path: '/run/x.sock', exportName: 'e0' });
    expect(parseNbdUri('nbd+unix://?socket=/s')).toMatchObject({ path: '/s', exportName: '' });
  });
  const badUris: [string, RegExp][] = [
    ['nbds://h/e', /TLS.*not supported/],
    ['nbds+unix:///e?socket=/s', /TLS.*not supported/],
    ['http://h/e', /unknown scheme/],
    ['nbd+unix:///e', /needs \?socket=PATH/],
    ['nbd+unix://host/e?socket=/s', /takes no host/],
    ['nbd://h:99999/e', /port must be 1..65535/],
    ['nbd://h/e?tls=1', /unsupported query parameter 'tls'/],
    ['127.0.0.1:10809', /not an NBD URI/],
  ];
  for (const [uri, why] of badUris) test(`uri=${uri} refused`, () => expect(() => parseNbdUri(uri)).toThrow(why));

  test('normalize: canonical uri, defaults; the two spellings compare equal', () => {
    const a = normalizeNbd({ name: 'n0', host: '127.0.0.1', export: 'e' });
    const b = normalizeNbd({ name: 'n0', uri: 'nbd://127.0.0.1:10809/e' });
    expect(a).toEqual(b);
    expect(a).toEqual({ name: 'n0', uri: 'nbd://127.0.0.1:10809/e', connections: '1', readonly: 'off', 'reconnect-timeout': '30', 'connect-timeout': '10', 'io-timeout': '30' });
    expect(normalizeNbd(a)).toEqual(a);
    const u = normalizeNbd({ name: 'n1', path: '/tmp/s.sock', connections: '4', 'block-size': '4096', 'reconnect-timeout': '5' });
    expect(u).toMatchObject({ uri: 'nbd+unix:///?socket=/tmp/s.sock', connections: '4', 'block-size': '4096', 'reconnect-timeout': '5' });
    expect(normalizeNbd(u)).toEqual(u);
  });
  const badSpecs: [Record<string, string>, RegExp][] = [
    [{ name: 'n' }, /give uri=, host=.*or path=/],
    [{ name: 'n', uri: 'nbd://h/e', host: 'h' }, /not both \(host= is set\)/],
    [{ name: 'n', host: 'h', path: '/s' }, /host= \(TCP\) or path=/],
    [{ name: 'n', path: '/s', port: '1' }, /port= applies to host=/],
    [{ name: 'n', host: 'h', connections: '0' }, /connections=0 must be an integer in 1..16/],
    [{ name: 'n', host: 'h', 'reconnect-timeout': '-1' }, /reconnect-timeout=-1 must be a number of seconds/],
    [{ name: 'n', host: 'h', 'io-timeout': '1m' }, /io-timeout=1m must be a number of seconds in 0..86400/],
    [{ name: 'n', host: 'h', 'block-size': '1024' }, /block-size=1024: must be 512 or 4096/],
    [{ name: 'n', host: 'h', readonly: 'maybe' }, /readonly=maybe: must be on or off/],
    [{ name: 'n', host: 'h', tls: 'on' }, /unknown key 'tls'/],
  ];
  for (const [spec, why] of badSpecs) test(`refused: ${JSON.stringify(spec)}`, () => expect(() => normalizeNbd(spec)).toThrow(why));

  const info = (o: Partial<Parameters<typeof planNbd>[3]> = {}) => ({
    sizeBytes: (1 << 30) + 100,
    flags: FLAGS,
    structured: true,
    minBlock: 1,
    preferredBlock: 4096,
    maxPayload: 1 << 25,
    blockSizeInfo: true,
    exportNameFallback: false,
    ...o,
  });
  const t = parseNbdUri('nbd://127.0.0.1/e');
  test('plan: caps from flags, size truncated to the block size, connections only with multi-conn', () => {
    const spec = normalizeNbd({ name: 'n', uri: 'nbd://127.0.0.1/e', connections: '4' });
    const d = planNbd(spec, t, '127.0.0.1', info());
    expect(d.info).toMatchObject({ blockSize: 512, sizeBytes: 1 << 30, readonly: false, caps: { flush: true, discard: true, writeZeroes: true } });
    expect(d.params.connections).toBe(1);
    expect(planNbd(spec, t, '127.0.0.1', info({ flags: FLAGS | NBD_FLAG_CAN_MULTI_CONN })).params.connections).toBe(4);
    const ro = planNbd(spec, t, '127.0.0.1', info({ flags: FLAGS | NBD_FLAG_READ_ONLY }));
    expect(ro.info).toMatchObject({ readonly: true, caps: { flush: true, discard: false, writeZeroes: false } });
    const bare = planNbd(spec, t, '127.0.0.1', info({ flags: NBD_FLAG_HAS_FLAGS }));
    expect(bare.info.caps).toEqual({ flush: false, discard: false, writeZeroes: false });
    expect(planNbd(normalizeNbd({ ...spec, readonly: 'on' }), t, '127.0.0.1', info()).info.readonly).toBe(true);
  });
  test('plan: block sizes honour the server minimum and max payload', () => {
    const spec = normalizeNbd({ name: 'n', uri: 'nbd://127.0.0.1/e' });
    expect(planNbd(spec, t, '127.0.0.1', info({ minBlock: 4096 })).info.blockSize).toBe(4096);
    expect(() => planNbd({ ...spec, 'block-size': '512' }, t, '127.0.0.1', info({ minBlock: 4096 }))).toThrow(/block-size=512 is below the server's minimum block size 4096; use block-size=4096/);
    expect(() => planNbd(spec, t, '127.0.0.1', info({ minBlock: 65536 }))).toThrow(/at most 4096/);
    expect(planNbd(spec, t, '127.0.0.1', info({ maxPayload: 65536 + 100 })).params.maxIoBytes).toBe(65536);
    expect(planNbd(spec, t, '127.0.0.1', info({ maxPayload: 0xffffffff })).params.maxIoBytes).toBe(1 << 25);
    expect(() => planNbd(spec, t, '127.0.0.1', info({ sizeBytes: 100 }))).toThrow(/smaller than one 512-byte block/);
  });
});
