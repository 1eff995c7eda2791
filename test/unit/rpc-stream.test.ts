// JsonStreamSplitter: the framing of SPDK's JSON-RPC socket. Requests are
// concatenated JSON values, not lines; rpc.py sends json.dumps(indent=2) with
// no trailing newline (python/spdk/rpc/client.py flush), and a value may arrive
// split at any byte.
import { describe, expect, test } from 'vitest';
import { JsonStreamSplitter, type StreamItem } from '../../src/rpc/json-stream.js';

const values = (items: StreamItem[]) => items.map((i) => (i.kind === 'value' ? i.text : `<${i.kind}>`));

/** Feed the chunks in order, collecting every item. */
function feed(chunks: string[], s = new JsonStreamSplitter()): StreamItem[] {
  return chunks.flatMap((c) => s.push(c));
}

/** What rpc.py sends for one call (client.py add_request + flush). */
function rpcPy(method: string, params?: Record<string, unknown>, id = 1): string {
  // Python's json.dumps(indent=2) matches JSON.stringify(..., 2) for ASCII text.
  return JSON.stringify({ jsonrpc: '2.0', method, id, ...(params ? { params } : {}) }, null, 2);
}

const REQ = rpcPy('bdev_null_resize', { name: 'N0', new_size: 128 });

// [name, stream, the values it holds]
const streams: [string, string, string[]][] = [
  ['compact request', '{"jsonrpc":"2.0","method":"spdk_get_version","id":1}', ['{"jsonrpc":"2.0","method":"spdk_get_version","id":1}']],
  ['rpc.py: pretty-printed, multi-line, no trailing newline', REQ, [REQ]],
  ['rpc.py: byte-exact capture', '{\n  "jsonrpc": "2.0",\n  "method": "bdev_null_resize",\n  "id": 1,\n  "params": {\n    "name": "N0",\n    "new_size": 128\n  }\n}', [REQ]],
  ['newline-terminated', '{"id":1}\n', ['{"id":1}']],
  ['coalesced, no separator', '{"id":1}{"id":2}{"id":3}', ['{"id":1}', '{"id":2}', '{"id":3}']],
  ['coalesced pretty requests', `${rpcPy('a', undefined, 1)}\n${rpcPy('b', { x: [1, 2] }, 2)}${rpcPy('c', undefined, 3)}`, [rpcPy('a', undefined, 1), rpcPy('b', { x: [1, 2] }, 2), rpcPy('c', undefined, 3)]],
  ['leading whitespace and newlines', ' \n\r\n\t {"id":1}', ['{"id":1}']],
  ['whitespace between values', '{"id":1} \n\n\t\r {"id":2}\n', ['{"id":1}', '{"id":2}']],
  ['braces and brackets in strings', '{"s":"}{][}}]]"}', ['{"s":"}{][}}]]"}']],
  ['escaped quotes in strings', '{"s":"a\\"}b\\"{"}', ['{"s":"a\\"}b\\"{"}']],
  ['backslashes before the closing quote', '{"s":"\\\\"}{"t":"\\\\\\\\","u":"\\\\\\""}', ['{"s":"\\\\"}', '{"t":"\\\\\\\\","u":"\\\\\\""}']],
  ['escaped backslash then brace', '{"s":"\\\\}"}', ['{"s":"\\\\}"}']],
  ['unicode escapes', '{"s":"\\u007b\\u0022\\ud83d\\ude00"}', ['{"s":"\\u007b\\u0022\\ud83d\\ude00"}']],
  ['raw unicode', '{"name":"диск-💾","note":"ü}"}', ['{"name":"диск-💾","note":"ü}"}']],
  ['nested arrays', '{"a":[[1,[2,[3,[]]]],{"b":[{}]}]}', ['{"a":[[1,[2,[3,[]]]],{"b":[{}]}]}']],
  ['a batch array', '[{"jsonrpc":"2.0","method":"a","id":1},{"jsonrpc":"2.0","method":"b"}]', ['[{"jsonrpc":"2.0","method":"a","id":1},{"jsonrpc":"2.0","method":"b"}]']],
  ['an empty batch', '[]', ['[]']],
  ['an empty object', '{}', ['{}']],
  ['object then batch', '{"id":1}[{"id":2}]', ['{"id":1}', '[{"id":2}]']],
  // Not the splitter's business: a value whose brackets balance is handed on and JSON.parse refuses it (-32700).
  ['balanced but not JSON', '{bad json}', ['{bad json}']],
];

describe('JsonStreamSplitter: values', () => {
  for (const [name, stream, want] of streams) {
    test(`${name}: in one chunk`, () => {
      const s = new JsonStreamSplitter();
      expect(values(s.push(stream))).toEqual(want);
      expect(s.pending()).toBe(0);
    });

    test(`${name}: one character at a time`, () => {
      const s = new JsonStreamSplitter();
      expect(values(feed([...stream.split('')], s))).toEqual(want);
      expect(s.pending()).toBe(0);
    });

    test(`${name}: in two chunks, split at every position`, () => {
      for (let k = 0; k <= stream.length; k++) {
        const s = new JsonStreamSplitter();
        const got = values(feed([stream.slice(0, k), stream.slice(k)], s));
        expect(got, `split at ${k}: ${JSON.stringify(stream.slice(0, k))} | ${JSON.stringify(stream.slice(k))}`).toEqual(want);
        expect(s.pending()).toBe(0);
      }
    });
  }

  test('each value is parseable JSON and equal to what was sent', () => {
    const reqs = [rpcPy('a'), rpcPy('b', { name: 'x{y}"z\\', list: [[1], [2, [3]]] }, 2), rpcPy('c', { u: 'é💾' }, 3)];
    const got = feed([...reqs.join('\n')]);
    expect(got.map((i) => (i.kind === 'value' ? JSON.parse(i.text) : i))).toEqual(reqs.map((r) => JSON.parse(r)));
  });

  test('a value completes on the chunk that closes it, not later', () => {
    const s = new JsonStreamSplitter();
    expect(s.push('{"a":[1,')).toEqual([]);
    expect(s.push('2]')).toEqual([]);
    expect(s.push('}{"b"')).toEqual([{ kind: 'value', text: '{"a":[1,2]}' }]);
    expect(s.push(':1}')).toEqual([{ kind: 'value', text: '{"b":1}' }]);
  });
});

describe('JsonStreamSplitter: pending()', () => {
  const rows: [string, string[], number][] = [
    ['nothing fed', [], 0],
    ['whitespace only', [' \n\t'], 0],
    ['half a request', ['{"id":'], 6],
    ['half a request after leading whitespace', ['\n  {"id":'], 6],
    ['a complete value and the start of the next', ['{"id":1}{"id"'], 5],
    ['split over chunks', ['{"a"', ':"x', '}'], 8],
    ['a complete value', ['{"id":1}'], 0],
  ];
  for (const [name, chunks, want] of rows) {
    test(name, () => {
      const s = new JsonStreamSplitter();
      feed(chunks, s);
      expect(s.pending()).toBe(want);
    });
  }
});

describe('JsonStreamSplitter: garbage', () => {
  // Bytes that cannot start a JSON-RPC request: there is no resync point in a
  // stream of JSON (SPDK jsonrpc_server.c closes the connection), so one
  // 'garbage' item and nothing after it.
  const rows: [string, string[], string[], string][] = [
    ['plain text', ['hello\n'], ['<garbage>'], 'hello\n'],
    ['a top-level number', ['42'], ['<garbage>'], '42'],
    ['a top-level string', ['"{}"'], ['<garbage>'], '"{}"'],
    ['a top-level null', ['null'], ['<garbage>'], 'null'],
    ['a stray closing brace', ['}'], ['<garbage>'], '}'],
    ['a stray closing bracket', [']{"id":1}'], ['<garbage>'], ']{"id":1}'],
    ['a comment (SPDK refuses them too)', ['// hi\n{"id":1}'], ['<garbage>'], '// hi\n{"id":1}'],
    ['garbage after a good value, in the same chunk', ['{"id":1}xyz{"id":2}'], ['{"id":1}', '<garbage>'], 'xyz{"id":2}'],
    ['garbage after a good value, in the next chunk', ['{"id":1}\n', ' x', '{"id":2}'], ['{"id":1}', '<garbage>'], 'x'],
    ['a byte-order mark', ['\ufeff{"id":1}'], ['<garbage>'], '\ufeff{"id":1}'],
  ];
  for (const [name, chunks, want, text] of rows) {
    test(name, () => {
      const s = new JsonStreamSplitter();
      const got = feed(chunks, s);
      expect(values(got)).toEqual(want);
      const g = got.find((i) => i.kind === 'garbage');
      expect(g).toEqual({ kind: 'garbage', text });
      // Dead for good: nothing more, whatever follows.
      expect(s.push('{"id":3}')).toEqual([]);
      expect(s.push('\n')).toEqual([]);
      expect(s.pending()).toBe(0);
    });
  }

  test('the garbage text is cut at 64 characters', () => {
    const item = new JsonStreamSplitter().push('x'.repeat(1000))[0];
    expect(item).toEqual({ kind: 'garbage', text: 'x'.repeat(64) });
  });

  test('one character at a time: garbage once', () => {
    const s = new JsonStreamSplitter();
    expect(values(feed([...'{"id":1} nope {"id":2}'], s))).toEqual(['{"id":1}', '<garbage>']);
  });
});

describe('JsonStreamSplitter: oversize', () => {
  const LIMIT = 64;
  const big = (n: number) => `{"s":"${'x'.repeat(n - 8)}"}`; // a value of exactly n characters

  test('an unfinished value over the limit: one oversize item, then nothing', () => {
    const s = new JsonStreamSplitter(LIMIT);
    expect(s.push(`{"s":"${'x'.repeat(LIMIT)}`)).toEqual([{ kind: 'oversize', bytes: LIMIT + 6 }]);
    expect(s.pending()).toBe(0);
    expect(s.push('"}{"id":1}')).toEqual([]);
  });

  test('growing past the limit over many chunks', () => {
    const s = new JsonStreamSplitter(LIMIT);
    const got: StreamItem[] = [];
    got.push(...s.push('{"s":"'));
    for (let i = 0; i < LIMIT && got.length === 0; i++) got.push(...s.push('x'));
    expect(got).toEqual([{ kind: 'oversize', bytes: LIMIT + 1 }]);
    expect(s.push('"}')).toEqual([]);
  });

  test('a value of exactly the limit passes, fed in pieces', () => {
    const v = big(LIMIT);
    expect(v.length).toBe(LIMIT);
    const s = new JsonStreamSplitter(LIMIT);
    expect(values(feed([v.slice(0, 10), v.slice(10, LIMIT - 1), v.slice(LIMIT - 1)], s))).toEqual([v]);
  });

  test('values before the oversize one in the same chunk are kept', () => {
    const s = new JsonStreamSplitter(LIMIT);
    expect(values(s.push(`{"id":1}{"s":"${'x'.repeat(LIMIT)}`))).toEqual(['{"id":1}', '<oversize>']);
  });

  test('a complete value over the limit in one chunk is oversize too', () => {
    const s = new JsonStreamSplitter(LIMIT);
    expect(values(s.push(big(LIMIT + 1)))).toEqual(['<oversize>']);
    expect(s.push('{"id":1}')).toEqual([]);
  });

  test('many small values add up to more than the limit: fine', () => {
    const s = new JsonStreamSplitter(LIMIT);
    const v = '{"id":12345}';
    expect(values(s.push(v.repeat(100)))).toEqual(Array(100).fill(v));
  });

  test('the default limit is 1 MiB', () => {
    const s = new JsonStreamSplitter();
    expect(s.push(`{"s":"${'x'.repeat(1 << 20)}`)).toEqual([{ kind: 'oversize', bytes: (1 << 20) + 6 }]);
  });
});

describe('JsonStreamSplitter: seeded fuzz', () => {
  // Random requests, random chunking: the values come back exactly, in order.
  test('never loses, reorders or merges a value', () => {
    let seed = 0x2545f491;
    const rnd = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pieces = ['{', '}', '[', ']', '"', '\\', 'a', 'é', '💾', ' ', '\n', ','];
    const randStr = () => Array.from({ length: rnd(12) }, () => pieces[rnd(pieces.length)]).join('');
    for (let round = 0; round < 200; round++) {
      const reqs = Array.from({ length: 1 + rnd(5) }, (_, i) => {
        const v = { jsonrpc: '2.0', method: randStr(), id: i, params: { s: randStr(), a: [randStr(), [randStr()]] } };
        return rnd(2) ? JSON.stringify(v, null, 2) : JSON.stringify(v);
      });
      const stream = reqs.map((r) => ' \n'.slice(0, rnd(3)) + r).join('');
      const chunks: string[] = [];
      for (let at = 0; at < stream.length; ) {
        const n = 1 + rnd(20);
        chunks.push(stream.slice(at, at + n));
        at += n;
      }
      expect(values(feed(chunks))).toEqual(reqs);
    }
  });
});
