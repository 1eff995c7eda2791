// RpcDispatcher: JSON-RPC 2.0 (single requests, batches, notifications) with
// SPDK's error codes, over a small fake method table and over vdx's real one.
// The real methods decode their params before they touch the daemon (SPDK's
// spdk_json_decode_object then the handler), so every -32602 row runs against
// a context whose registries throw if touched.
import { pino } from 'pino';
import { describe, expect, test } from 'vitest';
import { ControlError } from '../../src/control/errors.js';
import { MAX_BATCH, RpcDispatcher } from '../../src/rpc/dispatch.js';
import { method, type MethodTable } from '../../src/rpc/method.js';
import type { RpcContext } from '../../src/rpc/methods/context.js';
import { METHODS } from '../../src/rpc/methods/index.js';
import { nonEmpty, str, u32, type Field } from '../../src/rpc/schema.js';

const log = pino({ level: 'silent' });

interface Reply {
  jsonrpc: string;
  id: string | number | null;
  result?: unknown;
  error?: { code: number; message: string };
}

const req = (m: string, params?: unknown, id: unknown = 1) => ({ jsonrpc: '2.0', method: m, id, ...(params === undefined ? {} : { params }) });

async function send<C>(d: RpcDispatcher<C>, v: unknown): Promise<Reply | Reply[] | undefined> {
  const text = await d.handleText(typeof v === 'string' ? v : JSON.stringify(v));
  return text === undefined ? undefined : (JSON.parse(text) as Reply | Reply[]);
}

async function one<C>(d: RpcDispatcher<C>, v: unknown): Promise<Reply> {
  const r = await send(d, v);
  if (r === undefined || Array.isArray(r)) throw new Error(`expected one reply, got ${JSON.stringify(r)}`);
  return r;
}

// ---------------------------------------------------------------- a fake table

interface FakeCtx {
  calls: string[];
}

function fakeDispatcher() {
  const ctx: FakeCtx = { calls: [] };
  const methods: MethodTable<FakeCtx> = {
    echo: method('echo x', { x: str.optional() }, (p, c) => {
      c.calls.push(`echo ${p.x ?? ''}`);
      return p.x ?? 'none';
    }),
    sum: method('a + b', { a: u32, b: u32 }, (p) => p.a + p.b),
    nothing: method('returns undefined', {}, () => undefined),
    slow: method('answers after ms', { ms: u32, tag: nonEmpty }, async (p, c) => {
      c.calls.push(`start ${p.tag}`);
      await new Promise((res) => setTimeout(res, p.ms));
      c.calls.push(`end ${p.tag}`);
      return p.tag;
    }),
    exists: method('a refused operation', {}, () => {
      throw new ControlError(-17, "bdev 'x' already exists with different parameters: size=1 (asked 2)");
    }),
    boom: method('a handler bug', {}, () => {
      throw new Error('boom');
    }),
    throw_undefined: method('throws something that is not an Error', {}, () => {
      throw undefined;
    }),
    throw_string: method('throws a string', {}, () => {
      throw 'just a string';
    }),
    bigint: method('a result JSON cannot carry', {}, () => ({ n: 1n })),
    circular: method('a result JSON cannot carry', {}, () => {
      const o: Record<string, unknown> = {};
      o.self = o;
      return o;
    }),
  };
  return { d: new RpcDispatcher(methods, ctx, log), ctx };
}

describe('RpcDispatcher: replies', () => {
  test('a result, framed as SPDK frames it: jsonrpc, id, result', async () => {
    const { d } = fakeDispatcher();
    expect(await d.handleText(JSON.stringify(req('sum', { a: 2, b: 3 }, 7)))).toBe('{"jsonrpc":"2.0","id":7,"result":5}');
  });

  test('an error: jsonrpc, id, error{code, message}, no data', async () => {
    const { d } = fakeDispatcher();
    expect(await d.handleText(JSON.stringify(req('exists', undefined, 'a')))).toBe(
      `{"jsonrpc":"2.0","id":"a","error":{"code":-17,"message":"bdev 'x' already exists with different parameters: size=1 (asked 2)"}}`,
    );
  });

  test('a handler returning nothing answers true (as SPDK\'s delete methods)', async () => {
    const { d } = fakeDispatcher();
    expect(await one(d, req('nothing'))).toEqual({ jsonrpc: '2.0', id: 1, result: true });
  });

  test('a plain Error from a handler is -32603 with its message', async () => {
    const { d } = fakeDispatcher();
    expect((await one(d, req('boom'))).error).toEqual({ code: -32603, message: 'boom' });
  });

  // The server chains each connection's replies on handleText: it must never reject.
  const neverRejects: [string, string, RegExp][] = [
    ['a handler throwing undefined', 'throw_undefined', /undefined/],
    ['a handler throwing a string', 'throw_string', /just a string/],
    ['a result with a BigInt', 'bigint', /BigInt/],
    ['a circular result', 'circular', /circular/i],
  ];
  for (const [name, m, msg] of neverRejects) {
    test(`${name}: -32603, handleText does not reject`, async () => {
      const { d } = fakeDispatcher();
      const r = await one(d, req(m, undefined, 9));
      expect(r.id).toBe(9);
      expect(r.error?.code).toBe(-32603);
      expect(r.error?.message).toMatch(msg);
      // In a batch, the other replies survive.
      const b = (await send(d, [req(m, undefined, 1), req('sum', { a: 1, b: 2 }, 2)])) as Reply[];
      expect(b.map((x) => x.error?.code ?? x.result)).toEqual([-32603, 3]);
    });
  }

  const ids: [string, unknown][] = [
    ['a number', 42],
    ['zero', 0],
    ['a negative number', -1],
    ['a fraction', 1.5],
    ['a string', 'req-1'],
    ['an empty string', ''],
    ['null', null],
  ];
  for (const [name, id] of ids) {
    test(`the id is echoed: ${name}`, async () => {
      const { d } = fakeDispatcher();
      expect(await one(d, req('echo', { x: 'hi' }, id))).toEqual({ jsonrpc: '2.0', id, result: 'hi' });
      expect((await one(d, req('nosuch', undefined, id))).id).toEqual(id);
    });
  }

  const params: [string, unknown, unknown][] = [
    ['absent', undefined, 'none'],
    ['null (no params, as SPDK)', null, 'none'],
    ['an empty object', {}, 'none'],
    ['by name', { x: 'y' }, 'y'],
  ];
  for (const [name, p, want] of params) {
    test(`params ${name}`, async () => {
      const { d } = fakeDispatcher();
      expect((await one(d, { ...req('echo'), params: p })).result).toEqual(want);
    });
  }
});

describe('RpcDispatcher: errors', () => {
  // [name, request text, code, id in the reply]
  const rows: [string, string, number, unknown][] = [
    ['parse error: truncated', '{"jsonrpc":"2.0","method":"echo","id":1', -32700, null],
    ['parse error: not JSON inside balanced braces', '{bad json}', -32700, null],
    ['parse error: trailing comma', '{"jsonrpc":"2.0","method":"echo","id":1,}', -32700, null],
    ['parse error: single quotes', "{'jsonrpc':'2.0'}", -32700, null],
    ['invalid request: a number', '42', -32600, null],
    ['invalid request: a string', '"echo"', -32600, null],
    ['invalid request: null', 'null', -32600, null],
    ['invalid request: true', 'true', -32600, null],
    ['invalid request: an empty object', '{}', -32600, null],
    ['invalid request: no jsonrpc', '{"method":"echo","id":1}', -32600, 1],
    ['invalid request: jsonrpc "1.0"', '{"jsonrpc":"1.0","method":"echo","id":1}', -32600, 1],
    ['invalid request: jsonrpc a number', '{"jsonrpc":2.0,"method":"echo","id":1}', -32600, 1],
    ['invalid request: no method', '{"jsonrpc":"2.0","id":1}', -32600, 1],
    ['invalid request: method a number', '{"jsonrpc":"2.0","method":5,"id":1}', -32600, 1],
    ['invalid request: method null', '{"jsonrpc":"2.0","method":null,"id":1}', -32600, 1],
    ['invalid request: id an object', '{"jsonrpc":"2.0","method":"echo","id":{"a":1}}', -32600, null],
    ['invalid request: id an array', '{"jsonrpc":"2.0","method":"echo","id":[1]}', -32600, null],
    ['invalid request: id a boolean', '{"jsonrpc":"2.0","method":"echo","id":true}', -32600, null],
    ['invalid request: unknown member', '{"jsonrpc":"2.0","method":"echo","id":1,"extra":1}', -32600, 1],
    ['invalid request: "result" in a request', '{"jsonrpc":"2.0","method":"echo","id":1,"result":1}', -32600, 1],
    ['invalid request: empty batch', '[]', -32600, null],
    ['method not found', '{"jsonrpc":"2.0","method":"nosuch","id":1}', -32601, 1],
    ['method not found: empty name', '{"jsonrpc":"2.0","method":"","id":1}', -32601, 1],
    ['method not found: wrong case', '{"jsonrpc":"2.0","method":"ECHO","id":1}', -32601, 1],
    ['method not found: an Object.prototype name', '{"jsonrpc":"2.0","method":"toString","id":1}', -32601, 1],
    ['method not found: __proto__', '{"jsonrpc":"2.0","method":"__proto__","id":1}', -32601, 1],
    ['method not found: constructor', '{"jsonrpc":"2.0","method":"constructor","id":1}', -32601, 1],
    ['method not found: hasOwnProperty', '{"jsonrpc":"2.0","method":"hasOwnProperty","id":1}', -32601, 1],
    ['invalid params: an array (by position)', '{"jsonrpc":"2.0","method":"sum","id":1,"params":[1,2]}', -32602, 1],
    ['invalid params: a string', '{"jsonrpc":"2.0","method":"sum","id":1,"params":"a=1"}', -32602, 1],
    ['invalid params: a number', '{"jsonrpc":"2.0","method":"sum","id":1,"params":3}', -32602, 1],
    ['invalid params: unknown parameter', '{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1,"b":2,"c":3}}', -32602, 1],
    ['invalid params: missing parameter', '{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1}}', -32602, 1],
    ['invalid params: wrong type', '{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1,"b":"2"}}', -32602, 1],
    ['invalid params: out of range', '{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1,"b":-2}}', -32602, 1],
    ['invalid params: a fraction for an integer', '{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1,"b":2.5}}', -32602, 1],
  ];
  for (const [name, text, code, id] of rows) {
    test(`${name} -> ${code}`, async () => {
      const { d, ctx } = fakeDispatcher();
      const r = await one(d, text);
      expect(r.jsonrpc).toBe('2.0');
      expect(r.id).toEqual(id);
      expect(r.error?.code).toBe(code);
      expect(typeof r.error?.message).toBe('string');
      expect(r).not.toHaveProperty('result');
      expect(ctx.calls).toEqual([]);
    });
  }

  test('the messages say what is wrong', async () => {
    const { d } = fakeDispatcher();
    expect((await one(d, '{"jsonrpc":"2.0","method":"echo","id":1,"extra":1}')).error?.message).toMatch(/unknown member "extra"/);
    expect((await one(d, req('nosuch'))).error?.message).toMatch(/'nosuch'.*rpc_get_methods/);
    expect((await one(d, req('sum', { a: 1, b: 2, c: 3 }))).error?.message).toMatch(/unknown parameter 'c'; parameters: a, b/);
    expect((await one(d, req('sum', { a: 1 }))).error?.message).toMatch(/missing parameter 'b'/);
    expect((await one(d, req('sum', { a: 1, b: '2' }))).error?.message).toMatch(/parameter 'b' must be an integer in 0\.\.4294967295, not "2"/);
  });
});

describe('RpcDispatcher: notifications', () => {
  test('no id: the method runs, nothing is answered', async () => {
    const { d, ctx } = fakeDispatcher();
    expect(await d.handleText('{"jsonrpc":"2.0","method":"echo","params":{"x":"n"}}')).toBeUndefined();
    expect(ctx.calls).toEqual(['echo n']);
  });

  test('no id: a failing method is not answered either (JSON-RPC 2.0 §4.1)', async () => {
    const { d } = fakeDispatcher();
    expect(await d.handleText('{"jsonrpc":"2.0","method":"nosuch"}')).toBeUndefined();
    expect(await d.handleText('{"jsonrpc":"2.0","method":"exists"}')).toBeUndefined();
    expect(await d.handleText('{"jsonrpc":"2.0","method":"sum","params":{"a":"x"}}')).toBeUndefined();
  });

  test('id null is not a notification: it is answered', async () => {
    const { d } = fakeDispatcher();
    expect(await one(d, req('echo', { x: 'z' }, null))).toEqual({ jsonrpc: '2.0', id: null, result: 'z' });
  });

  test('an invalid request without an id is still answered: it cannot be known to be a notification', async () => {
    const { d } = fakeDispatcher();
    expect((await one(d, '{"method":"echo"}')).error?.code).toBe(-32600);
  });
});

describe('RpcDispatcher: batches', () => {
  test('mixed results, in request order, notifications left out', async () => {
    const { d, ctx } = fakeDispatcher();
    const r = await send(d, [
      req('echo', { x: 'a' }, 1),
      { jsonrpc: '2.0', method: 'echo', params: { x: 'note' } },
      req('nosuch', undefined, 2),
      42,
      req('exists', undefined, 'three'),
      req('sum', { a: 'x', b: 1 }, 4),
      req('boom', undefined, 5),
      [req('echo', { x: 'nested' }, 6)],
      req('sum', { a: 1, b: 1 }, 7),
    ]);
    expect(Array.isArray(r)).toBe(true);
    const rs = r as Reply[];
    expect(rs.map((x) => x.id)).toEqual([1, 2, null, 'three', 4, 5, null, 7]);
    expect(rs.map((x) => x.error?.code ?? x.result)).toEqual(['a', -32601, -32600, -17, -32602, -32603, -32600, 2]);
    expect(ctx.calls).toEqual(['echo a', 'echo note']);
  });

  test('all notifications: no reply at all', async () => {
    const { d, ctx } = fakeDispatcher();
    const note = (x: string) => ({ jsonrpc: '2.0', method: 'echo', params: { x } });
    expect(await d.handleText(JSON.stringify([note('1'), note('2'), { jsonrpc: '2.0', method: 'nosuch' }]))).toBeUndefined();
    expect(ctx.calls).toEqual(['echo 1', 'echo 2']);
  });

  test('an empty batch is one -32600, not an array', async () => {
    const { d } = fakeDispatcher();
    expect(await one(d, '[]')).toMatchObject({ id: null, error: { code: -32600 } });
  });

  test('requests run one after another, in order, even when an earlier one is slow', async () => {
    const { d, ctx } = fakeDispatcher();
    const r = (await send(d, [req('slow', { ms: 30, tag: 'a' }, 1), req('slow', { ms: 0, tag: 'b' }, 2), req('slow', { ms: 10, tag: 'c' }, 3)])) as Reply[];
    expect(r.map((x) => x.result)).toEqual(['a', 'b', 'c']);
    expect(ctx.calls).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });

  test('a batch of one is answered with an array of one', async () => {
    const { d } = fakeDispatcher();
    expect(await send(d, [req('sum', { a: 1, b: 2 })])).toEqual([{ jsonrpc: '2.0', id: 1, result: 3 }]);
  });

  test(`at most ${MAX_BATCH} requests; a larger batch is refused whole`, async () => {
    const { d, ctx } = fakeDispatcher();
    const ok = (await send(d, Array.from({ length: MAX_BATCH }, (_, i) => req('echo', { x: 'k' }, i)))) as Reply[];
    expect(ok).toHaveLength(MAX_BATCH);
    ctx.calls.length = 0;
    expect(await one(d, Array.from({ length: MAX_BATCH + 1 }, (_, i) => req('echo', { x: 'k' }, i)))).toMatchObject({ id: null, error: { code: -32600 } });
    expect(ctx.calls).toEqual([]);
  });
});

// ---------------------------------------------------------------- the real table

/** Thrown by the test context when a handler reaches the daemon: never -32602, so it cannot pass for validation. */
const TOUCHED = -9999;

function untouchable(what: string): never {
  throw new ControlError(TOUCHED, `test context: the handler touched ${what}`);
}

const ctx: RpcContext = {
  get bdevs(): never {
    return untouchable('bdevs');
  },
  get exports(): never {
    return untouchable('exports');
  },
  get pool(): never {
    return untouchable('pool');
  },
  reactors: { count: 1, cpus: [], idleSpinUs: 200 },
  vhostSocketDir: '/nonexistent/vdx-rpc-test',
  methods: METHODS,
  resizeBdev: () => untouchable('resizeBdev'),
};
const real = new RpcDispatcher(METHODS, ctx, log);

type AnyField = Field<unknown, boolean>;

/** The values a field's `expected` names as its only ones ('one of "a", "b"', '512 or 4096'). */
function namedValues(f: AnyField): unknown[] {
  if (f.expected.startsWith('one of ')) return [...f.expected.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
  return [...f.expected.matchAll(/\b\d+\b/g)].map((m) => Number(m[0]));
}

function accepts(f: AnyField, v: unknown): boolean {
  try {
    f.decode(v, 'p');
    return true;
  } catch {
    return false;
  }
}

/** A value the field's schema accepts, found by probing: every field needs one. */
function validValue(f: AnyField): unknown {
  const probes = ['v0', 512, 1, 4, true, {}, '1G', '0x1', '0600', ['v0', 'v1'], ...namedValues(f)];
  const v = probes.find((p) => accepts(f, p));
  if (v === undefined) throw new Error(`no valid probe value for a field expecting ${f.expected}: add one to validValue()`);
  return v;
}

/** Values of other JSON types (and a few shapes) the field refuses. */
const WRONG: unknown[] = [null, true, 42, -1, 1.5, 'x', '', [], ['x'], {}, { k: { deep: 1 } }];
const wrongValues = (f: AnyField) => WRONG.filter((v) => !accepts(f, v));

/** Valid values for every required parameter of a method. */
function required(schema: Record<string, AnyField>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(schema).filter(([, f]) => !f.isOptional).map(([k, f]) => [k, validValue(f)]));
}

async function expectInvalidParam(m: string, params: unknown, param: string): Promise<void> {
  const r = await one(real, req(m, params, 'v'));
  expect(r.id).toBe('v');
  expect(r.error, `${m} ${JSON.stringify(params)}: ${JSON.stringify(r)}`).toBeDefined();
  expect(r.error!.code, `${m} ${JSON.stringify(params)}: ${r.error!.message}`).toBe(-32602);
  // The parameter's own spelling as a whole word: 'logical-block-size' does not name logical_block_size.
  expect(r.error!.message, `${m} ${JSON.stringify(params)}`).toMatch(new RegExp(`(^|[^A-Za-z0-9_-])${param}([^A-Za-z0-9_-]|$)`));
}

const methodNames = Object.keys(METHODS);

describe('the real method table', () => {
  test('covers SPDK\'s methods that rpc.py and save_config use', () => {
    for (const m of [
      'rpc_get_methods', 'spdk_get_version', 'framework_get_subsystems', 'framework_get_config', 'framework_wait_init',
      'bdev_malloc_create', 'bdev_malloc_delete', 'bdev_null_create', 'bdev_null_delete', 'bdev_null_resize',
      'bdev_aio_create', 'bdev_aio_delete', 'bdev_get_bdevs', 'bdev_wait_for_examine',
      'vhost_create_blk_controller', 'vhost_get_controllers', 'vhost_delete_controller',
    ]) expect(methodNames).toContain(m);
  });

  test('never lists framework_start_init: load_config would call it forever on a running daemon', () => {
    expect(methodNames).not.toContain('framework_start_init');
  });

  test('rpc_get_methods is the table\'s keys, with the params load_config sends', async () => {
    expect((await one(real, req('rpc_get_methods'))).result).toEqual(methodNames);
    expect((await one(real, req('rpc_get_methods', { include_aliases: false }))).result).toEqual(methodNames);
    // On a running daemon the start-up-only method is not current, so load_config skips it instead of failing on it.
    expect((await one(real, req('rpc_get_methods', { current: true, include_aliases: false }))).result).toEqual(methodNames.filter((m) => m !== 'framework_set_reactors'));
  });

  test('every schema has a valid value for each field (the generator below covers new methods)', () => {
    for (const [m, def] of Object.entries(METHODS)) {
      for (const [k, f] of Object.entries(def.params)) {
        expect(() => validValue(f), `${m}.${k}`).not.toThrow();
        expect(wrongValues(f).length, `${m}.${k}: no wrong value refused`).toBeGreaterThan(0);
      }
    }
  });

  // The test context is effective: with valid params a handler that needs the daemon does reach it.
  const reach: [string, Record<string, unknown>][] = [
    ['bdev_get_bdevs', {}],
    ['bdev_malloc_create', { name: 'm0', num_blocks: 2048, block_size: 512 }],
    ['bdev_null_delete', { name: 'n0' }],
    ['vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'm0' }],
    ['export_list', {}],
  ];
  for (const [m, p] of reach) {
    test(`${m} with valid params reaches the daemon (sanity check of the test context)`, async () => {
      expect((await one(real, req(m, p))).error?.code).toBe(TOUCHED);
    });
  }
});

describe('every method: an unknown parameter is -32602 naming it', () => {
  for (const m of methodNames) {
    test(m, async () => {
      await expectInvalidParam(m, { ...required(METHODS[m]!.params), no_such_param: 1 }, 'no_such_param');
      // Even alone, before any missing required parameter is reported.
      await expectInvalidParam(m, { bogus: 'x' }, 'bogus');
    });
  }
});

describe('every method: a missing required parameter is -32602 naming it', () => {
  for (const m of methodNames) {
    const schema = METHODS[m]!.params;
    for (const k of Object.keys(schema).filter((k) => !schema[k]!.isOptional)) {
      test(`${m}: ${k}`, async () => {
        const p = required(schema);
        delete p[k];
        await expectInvalidParam(m, p, k);
        // Passing null is no better than leaving it out.
        await expectInvalidParam(m, { ...p, [k]: null }, k);
      });
    }
  }
});

describe('every method: a parameter of the wrong type is -32602 naming it', () => {
  for (const m of methodNames) {
    const schema = METHODS[m]!.params;
    for (const [k, f] of Object.entries(schema)) {
      test(`${m}: ${k} (${f.expected})`, async () => {
        for (const v of wrongValues(f)) await expectInvalidParam(m, { ...required(schema), [k]: v }, k);
      });
    }
  }
});

describe('out-of-range values are -32602 naming the parameter', () => {
  const base = {
    bdev_malloc_create: { num_blocks: 2048, block_size: 512 },
    bdev_null_create: { name: 'n0', num_blocks: 2048, block_size: 512 },
    bdev_aio_create: { name: 'a0', filename: '/var/tmp/a.img' },
    bdev_uring_create: { name: 'u0', filename: '/var/tmp/u.img' },
    vhost_create_blk_controller: { ctrlr: 'vhost.0', dev_name: 'm0' },
    vduse_create_blk_device: { name: 'vduse0', bdev_name: 'm0' },
    vdpa_bind_device: { name: 'vduse0', bus: 'virtio' },
    framework_set_reactors: { count: 1 },
  } as const;
  const rows: [keyof typeof base, string, unknown][] = [
    ['bdev_malloc_create', 'block_size', 1000],
    ['bdev_malloc_create', 'block_size', 0],
    ['bdev_malloc_create', 'block_size', 8192],
    ['bdev_malloc_create', 'num_blocks', 0],
    ['bdev_malloc_create', 'num_blocks', -1],
    ['bdev_malloc_create', 'num_blocks', 2 ** 53],
    ['bdev_malloc_create', 'dif_type', 4],
    ['bdev_null_create', 'block_size', 1000],
    ['bdev_aio_create', 'block_size', 1000],
    ['bdev_uring_create', 'block_size', 1000],
    ['vhost_create_blk_controller', 'num_queues', 0],
    ['vhost_create_blk_controller', 'num_queues', 65],
    ['vhost_create_blk_controller', 'queue_size', 2],
    ['vhost_create_blk_controller', 'ctrlr', 'a/b'],
    ['vhost_create_blk_controller', 'ctrlr', '..'],
    ['vhost_create_blk_controller', 'ctrlr', ''],
    ['vhost_create_blk_controller', 'transport', 'vfio_user_blk'],
    ['vhost_create_blk_controller', 'transport', 'VHOST_USER_BLK'],
    // Past the schema: the handler's own checks (export keys) must name the RPC parameter too.
    ['vhost_create_blk_controller', 'logical_block_size', 1000],
    ['vhost_create_blk_controller', 'socket_mode', 'rw'],
    ['vhost_create_blk_controller', 'serial', 'x'.repeat(21)],
    ['vhost_create_blk_controller', 'cpumask', 'zz'],
    ['vduse_create_blk_device', 'num_queues', 0],
    ['vduse_create_blk_device', 'num_queues', 65],
    ['vduse_create_blk_device', 'bus', 'pci'],
    ['vduse_create_blk_device', 'logical_block_size', 1000],
    ['vduse_create_blk_device', 'queue_size', 100],
    ['vduse_create_blk_device', 'cpumask', 'zz'],
    ['vduse_create_blk_device', 'msg_timeout', -1],
    ['vduse_create_blk_device', 'msg_timeout', 1.5],
    ['framework_set_reactors', 'cpumask', 'zz'],
    ['vdpa_bind_device', 'bus', 'pci'],
    ['vdpa_bind_device', 'bus', 'none'],
  ];
  for (const [m, k, v] of rows) {
    test(`${m} ${k}=${JSON.stringify(v)}`, async () => {
      await expectInvalidParam(m, { ...base[m], [k]: v }, k);
    });
  }
});
