// Loading users' bdev modules: what is refused (and how it is said), and that
// what a module's main-thread functions throw names the module.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { BDEV_MODULES, bdevModule, bdevModuleSource, loadBdevModule, resolveModulePath } from '../../src/bdev/registry.js';
import { configModules } from '../../src/config/config.js';

const dir = mkdtempSync(join(tmpdir(), 'vdx-modules-'));
function moduleFile(name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, body);
  return p;
}
const GOOD = (type: string, extra = '') => `export default {
  type: '${type}',
  keys: { name: 'bdev name', size: 'bytes' },
  normalize(spec) { if (!spec.name) throw new Error('missing name='); return { name: spec.name, size: spec.size ?? '4096' }; },
  async create(spec) { if (spec.size === '0') throw Object.assign(new Error('the store said no'), { errno: 28 }); return { info: { name: spec.name, type: '${type}', blockSize: 512, sizeBytes: Number(spec.size), readonly: false, caps: { flush: true, discard: false, writeZeroes: false }, maxDiscardBytes: 0 }, params: {} }; },
  open() { throw new Error('no channel in this test'); },
  describe: () => ({ productName: '${type}', driverSpecific: {} }),
  destroy() {},
  ${extra}
};`;

describe('loading bdev modules', () => {
  test('a good module registers its type; its errors name the module, and a store errno travels on', async () => {
    const p = moduleFile('good.mjs', GOOD('good'));
    expect(await loadBdevModule(p)).toEqual(['good']);
    expect(Object.keys(BDEV_MODULES)).toContain('good');
    expect(bdevModuleSource('good')).toBe(p);
    expect(bdevModuleSource('malloc')).toBeUndefined();
    const m = bdevModule('good');
    expect(() => m.normalize({})).toThrow(new RegExp(`bdev module ${p} \\(type good\\), normalize: missing name=`));
    const err = await Promise.resolve(m.create({ name: 'x', size: '0' }, [])).catch((e: unknown) => e as Error & { errno?: number });
    expect(err.message).toMatch(/bdev module .*good\.mjs \(type good\), create: the store said no/);
    expect(err.errno).toBe(28);
    expect(() => m.open({ info: {} as never, params: {} }, { log: () => {}, openBase: () => undefined as never, closeBase: () => {} })).toThrow(/\(type good\), open: no channel in this test/);
  });

  test('an array default export registers each', async () => {
    const p = moduleFile('two.mjs', `import a from './a.mjs'; import b from './b.mjs'; export default [a, b];`);
    moduleFile('a.mjs', GOOD('alpha'));
    moduleFile('b.mjs', GOOD('beta'));
    expect(await loadBdevModule(p)).toEqual(['alpha', 'beta']);
    expect(bdevModuleSource('beta')).toBe(`${p} [1]`);
  });

  test('refused, each saying what is wrong: a built-in or taken type, a bad type name, a missing function, bad keys, no default export, a file that does not load', async () => {
    await expect(loadBdevModule(moduleFile('m1.mjs', GOOD('malloc')))).rejects.toThrow(/type 'malloc' is taken by a built-in bdev; give the module a type of its own/);
    await loadBdevModule(moduleFile('m2.mjs', GOOD('twice')));
    await expect(loadBdevModule(moduleFile('m3.mjs', GOOD('twice')))).rejects.toThrow(/type 'twice' is taken by --bdev-module .*m2\.mjs/);
    await expect(loadBdevModule(moduleFile('m4.mjs', GOOD('Bad Type')))).rejects.toThrow(/type must be a lowercase name such as "cow"/);
    await expect(loadBdevModule(moduleFile('m5.mjs', GOOD('noopen').replace("open() { throw new Error('no channel in this test'); },", '')))).rejects.toThrow(/\(type noopen\): open\(\) is missing; a bdev module has normalize, create, open, describe, destroy/);
    await expect(loadBdevModule(moduleFile('m6.mjs', GOOD('badkeys').replace("keys: { name: 'bdev name', size: 'bytes' }", 'keys: { name: 1 }')))).rejects.toThrow(/keys must map each spec key to a one-line meaning/);
    await expect(loadBdevModule(moduleFile('m7.mjs', GOOD('badbase', "baseKeys: ['nope'],")))).rejects.toThrow(/baseKeys must list keys of its own keys/);
    await expect(loadBdevModule(moduleFile('m8.mjs', 'export const x = 1;'))).rejects.toThrow(/it has no default export/);
    await expect(loadBdevModule(moduleFile('m9.mjs', 'export default {;'))).rejects.toThrow(/m9\.mjs: cannot load it/);
    await expect(loadBdevModule(join(dir, 'missing.mjs'))).rejects.toThrow(/missing\.mjs: cannot load it/);
  });

  test('paths: relative to the working directory on the command line, to the file in a config', () => {
    expect(resolveModulePath('/abs/x.mjs')).toBe('/abs/x.mjs');
    expect(resolveModulePath('x.mjs', '/base')).toBe('/base/x.mjs');
    const cfg = join(dir, 'c.json');
    writeFileSync(cfg, JSON.stringify({ modules: ['./mods/crc.mjs', '/abs/y.mjs'], bdevs: [] }));
    expect(configModules(cfg)).toEqual([join(dir, 'mods/crc.mjs'), '/abs/y.mjs']);
    writeFileSync(cfg, JSON.stringify({ modules: './x.mjs' }));
    expect(() => configModules(cfg)).toThrow(/modules must be an array of paths/);
    writeFileSync(cfg, JSON.stringify({ bdevs: [] }));
    expect(configModules(cfg)).toEqual([]);
  });
});
