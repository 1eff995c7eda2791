// rbd bdev spec validation (pure), the Ceph options a spec turns into, and the
// message a machine without librbd gives (simulated in a child process, since
// the library table is process-wide).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { rbdBdev, rbdCephOptions } from '../../src/bdev/rbd.js';

const base = { name: 'r0', image: 'vm1' };

describe('rbd: normalize', () => {
  test('defaults are filled in and canonical', () => {
    expect(rbdBdev.normalize(base)).toEqual({
      name: 'r0',
      pool: 'rbd',
      image: 'vm1',
      namespace: '',
      snapshot: '',
      conf: '',
      user: 'admin',
      'key-file': '',
      'mon-host': '',
      cluster: 'ceph',
      cache: 'none',
      'osd-op-timeout': '30',
      'mon-op-timeout': '30',
      'connect-timeout': '30',
      readonly: 'off',
      'block-size': '512',
    });
  });

  test('two spellings of one bdev compare equal', () => {
    const a = rbdBdev.normalize({ ...base, readonly: 'yes', 'osd-op-timeout': '030' });
    const b = rbdBdev.normalize({ ...base, readonly: 'on', 'osd-op-timeout': '30', pool: 'rbd' });
    expect(a).toEqual(b);
  });

  test('a snapshot implies readonly', () => {
    expect(rbdBdev.normalize({ ...base, snapshot: 's1' }).readonly).toBe('on');
  });

  const bad: [string, Record<string, string>, RegExp][] = [
    ['no image', { name: 'r0' }, /missing image=/],
    ['no name', { image: 'x' }, /missing name=/],
    ['unknown key', { ...base, id: 'admin' }, /unknown key 'id'; known keys: .*user/],
    ['pool with a slash', { ...base, pool: 'a/b' }, /pool=a\/b: .*no \/ or @/],
    ['image@snap in one key', { ...base, image: 'vm1@s1' }, /image=vm1@s1: .*snapshot/],
    ['snapshot written to', { ...base, snapshot: 's1', readonly: 'off' }, /snapshot=s1 is read-only/],
    ['client. prefix', { ...base, user: 'client.admin' }, /without "client\." \(user=admin\)/],
    ['cache mode', { ...base, cache: 'writethrough' }, /cache=writethrough: must be none, writearound or writeback/],
    ['timeout zero', { ...base, 'osd-op-timeout': '0' }, /osd-op-timeout=0: whole seconds from 1 to 3600/],
    ['timeout fraction', { ...base, 'connect-timeout': '1.5' }, /connect-timeout=1.5: whole seconds/],
    ['timeout unit', { ...base, 'mon-op-timeout': '30s' }, /mon-op-timeout=30s: whole seconds/],
    ['timeout huge', { ...base, 'osd-op-timeout': '99999' }, /osd-op-timeout=99999/],
    ['relative conf', { ...base, conf: 'ceph.conf' }, /conf=ceph.conf: must be an absolute path/],
    ['relative key-file', { ...base, 'key-file': 'k' }, /key-file=k: must be an absolute path/],
    ['mon-host junk', { ...base, 'mon-host': '127.0.0.1:6789$(x)' }, /mon-host=.*: addresses like/],
    ['block size', { ...base, 'block-size': '1024' }, /block-size=1024: must be 512 or 4096/],
    ['readonly value', { ...base, readonly: 'maybe' }, /readonly=maybe: must be on or off/],
  ];
  for (const [what, spec, msg] of bad) test(`rejects: ${what}`, () => expect(() => rbdBdev.normalize(spec)).toThrow(msg));
});

describe('rbd: Ceph options', () => {
  const opts = (spec: Record<string, string>) => new Map(rbdCephOptions(rbdBdev.normalize({ ...base, ...spec })));

  test('every wait is bounded, signals stay Node\'s, cache off by default', () => {
    const o = opts({});
    expect(o.get('client_mount_timeout')).toBe('30');
    expect(o.get('rados_mon_op_timeout')).toBe('30');
    expect(Number(o.get('rados_osd_op_timeout'))).toBeGreaterThan(26); // above heartbeat grace + interval
    expect(o.get('fatal_signal_handlers')).toBe('false');
    expect(o.get('rbd_cache')).toBe('false');
    expect(o.has('rbd_cache_policy')).toBe(false);
    expect(o.has('mon_host')).toBe(false);
    expect(o.has('keyring')).toBe(false);
  });

  test('cache modes, timeouts, mon-host and key-file pass through', () => {
    const o = opts({ cache: 'writeback', 'osd-op-timeout': '5', 'mon-host': '127.0.0.1:6789', 'key-file': '/k' });
    expect(o.get('rbd_cache')).toBe('true');
    expect(o.get('rbd_cache_policy')).toBe('writeback');
    expect(o.get('rados_osd_op_timeout')).toBe('5');
    expect(o.get('mon_host')).toBe('127.0.0.1:6789');
    expect(o.get('keyring')).toBe('/k');
    expect(opts({ cache: 'writearound' }).get('rbd_cache_policy')).toBe('writearound');
  });
});

describe('rbd: librbd missing', () => {
  test('the error names the package to install; the addon itself still loads', () => {
    const addon = fileURLToPath(new URL('../../build/Release/vdx_native.node', import.meta.url));
    const script = `
      const a = require(${JSON.stringify(addon)});
      try { a.rbdVersion(); console.log('loaded'); } catch (e) { console.log('E1 ' + e.message + ' errno=' + e.errno); }
      a.rbdOpen({ clusterKey: 'k', cluster: 'ceph', user: 'admin', conf: '', options: [] }, { pool: 'rbd', namespace: '', image: 'x', snapshot: '', imageKey: 'i' })
        .then(() => console.log('opened'), (e) => console.log('E2 ' + e.message));`;
    const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, VDX_LIBRBD: '/nonexistent/librbd.so.1' }, encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/E1 librbd1 is not installed \(apt install librbd1\): .*librbd\.so\.1.* errno=2/);
    expect(r.stdout).toMatch(/E2 librbd1 is not installed \(apt install librbd1\)/);
  });
});
