// The bdev registry with asynchronous modules (remote stores connect in
// create, close in destroy): one create per name however many callers race,
// a delete that fails keeps the bdev, nothing uses a bdev while it closes, and
// a store's refusal keeps its errno.
import { pino } from 'pino';
import { describe, expect, test, vi } from 'vitest';
import type { BdevDesc, BdevModule } from '../../src/bdev/types.js';

const gate = { create: Promise.resolve(), destroy: Promise.resolve(), destroyFails: false, createErrno: 0 };
let creates = 0;
let watchers = 0;

const slow: BdevModule = {
  type: 'slow',
  keys: { name: 'name', where: 'where' },
  normalize: (spec) => ({ name: spec.name!, where: spec.where ?? 'a' }),
  async create(spec): Promise<BdevDesc> {
    creates++;
    await gate.create;
    if (gate.createErrno) throw Object.assign(new Error('the store said no'), { errno: gate.createErrno });
    return {
      info: { name: spec.name!, type: 'slow', blockSize: 512, sizeBytes: 1 << 20, readonly: false, caps: { flush: true, discard: false, writeZeroes: false }, maxDiscardBytes: 0 },
      params: {},
    };
  },
  open: () => {
    throw new Error('not in this test');
  },
  watch: () => {
    watchers++;
    return () => watchers--;
  },
  describe: () => ({ productName: 'slow', driverSpecific: {} }),
  async destroy(): Promise<void> {
    await gate.destroy;
    if (gate.destroyFails) throw new Error('close failed');
  },
};

vi.mock('../../src/bdev/registry.js', () => ({
  BDEV_MODULES: { slow },
  bdevModule: (type: string) => {
    if (type !== 'slow') throw new Error(`unknown bdev type '${type}'`);
    return slow;
  },
}));

const { BdevRegistry } = await import('../../src/control/bdevs.js');
const log = pino({ level: 'silent' });

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('BdevRegistry with asynchronous modules', () => {
  test('racing creates of one name: one create reaches the module, the others get that bdev or a clear refusal', async () => {
    const reg = new BdevRegistry(log);
    creates = 0;
    const d = deferred();
    gate.create = d.promise;
    const a = reg.create({ type: 'slow', name: 's0' });
    const b = reg.create({ type: 'slow', name: 's0' });
    const c = reg.create({ type: 'slow', name: 's0', where: 'b' });
    d.resolve();
    const [ra, rb] = await Promise.all([a, b]);
    expect(creates).toBe(1);
    expect(ra.created).toBe(true);
    expect(rb.created).toBe(false);
    expect(rb.entry).toBe(ra.entry);
    await expect(c).rejects.toThrow(/already exists with different parameters: where=a \(asked b\)/);
    expect(watchers).toBe(1);
    gate.create = Promise.resolve();
    await reg.delete('s0');
    expect(watchers).toBe(0);
  });

  test("a store's refusal is -errno and leaves no bdev", async () => {
    const reg = new BdevRegistry(log);
    gate.createErrno = 110;
    await expect(reg.create({ type: 'slow', name: 's1' })).rejects.toMatchObject({ code: -110, message: expect.stringMatching(/bdev 's1': the store said no/) });
    gate.createErrno = 0;
    expect(reg.has('s1')).toBe(false);
  });

  test('while a delete closes the bdev it cannot be claimed or deleted again; a failed close keeps it', async () => {
    const reg = new BdevRegistry(log);
    await reg.create({ type: 'slow', name: 's2' });
    const d = deferred();
    gate.destroy = d.promise;
    gate.destroyFails = true;
    const del = reg.delete('s2');
    expect(() => reg.claim('s2', 'vhost controller x')).toThrow(/bdev 's2' is being deleted/);
    await expect(reg.delete('s2')).rejects.toThrow(/being deleted/);
    d.resolve();
    await expect(del).rejects.toMatchObject({ code: -16, message: expect.stringMatching(/was not deleted: close failed/) });
    expect(reg.has('s2')).toBe(true);
    expect(watchers).toBe(1); // watched again
    gate.destroyFails = false;
    gate.destroy = Promise.resolve();
    await reg.delete('s2');
    expect(reg.has('s2')).toBe(false);
    expect(watchers).toBe(0);
  });

  test('clear() waits for a create still connecting and undoes it', async () => {
    const reg = new BdevRegistry(log);
    const d = deferred();
    gate.create = d.promise;
    const made = reg.create({ type: 'slow', name: 's3' });
    const cleared = reg.clear();
    d.resolve();
    await expect(made).rejects.toThrow(/shutting down/);
    await cleared;
    expect(reg.has('s3')).toBe(false);
    gate.create = Promise.resolve();
  });
});
