import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { bdevFromSpec, exportFromSpec, loadConfigFile, parseCpumask, parseSpec, validateConfig } from '../../src/config/config.js';
import { parseSize } from '../../src/bdev/spec.js';

describe('spec parsing', () => {
  test('type:key=value,... with ",," for a literal comma', () => {
    expect(parseSpec('--bdev', 'file:name=f,path=/a,,b')).toEqual({ type: 'file', keys: { name: 'f', path: '/a,b' } });
  });

  test('a full vduse export, with the issue\'s keys', () => {
    expect(exportFromSpec('vduse:bdev=m0,name=vduse0,num-queues=2,queue-size=256,logical-block-size=512,serial=disk0,readonly=off,bus=vhost,packed=on')).toEqual({
      type: 'vduse', name: 'vduse0', bdev: 'm0', numQueues: 2, queueSize: 256, logicalBlockSize: 512, serial: 'disk0', readonly: false, bus: 'vhost', packed: true,
      delayBaseUs: 0, iopsThreshold: 60000,
    });
    expect(exportFromSpec('vduse:bdev=m0')).toMatchObject({ name: 'm0', queueSize: 1024, bus: 'virtio', packed: false });
    expect(() => exportFromSpec('vduse:bdev=m0,packed=maybe')).toThrow(/packed=maybe/);
  });

  test("vduse msg-timeout: seconds, 0 for forever, unset leaves the kernel's", () => {
    expect(exportFromSpec('vduse:bdev=m0,msg-timeout=120')).toMatchObject({ msgTimeout: 120 });
    expect(exportFromSpec('vduse:bdev=m0,msg-timeout=0')).toMatchObject({ msgTimeout: 0 });
    expect(exportFromSpec('vduse:bdev=m0').msgTimeout).toBeUndefined();
    expect(() => exportFromSpec('vduse:bdev=m0,msg-timeout=30s')).toThrow('vduse: msg-timeout=30s must be an integer in 0..86400');
    expect(() => exportFromSpec('vhost-user:bdev=m0,socket=/s,msg-timeout=5')).toThrow(/msg-timeout/);
  });

  test('a full vhost-user export', () => {
    expect(exportFromSpec('vhost-user:bdev=m0,socket=/run/vdx/m0.sock,num-queues=2,serial=disk0,readonly=off')).toEqual({
      type: 'vhost-user', name: 'm0', bdev: 'm0', socket: '/run/vdx/m0.sock', numQueues: 2, queueSize: 128, serial: 'disk0', readonly: false, mode: 0o600, logicalBlockSize: undefined,
      packed: true, cpumask: undefined, delayBaseUs: 0, iopsThreshold: 60000,
    });
  });

  test("interrupt coalescing keys: SPDK's defaults (off, 60000), its bounds, on both kinds", () => {
    expect(exportFromSpec('vhost-user:bdev=m0,socket=/s,delay-base-us=50,iops-threshold=100000')).toMatchObject({ delayBaseUs: 50, iopsThreshold: 100000 });
    expect(exportFromSpec('vduse:bdev=m0,delay-base-us=20')).toMatchObject({ delayBaseUs: 20, iopsThreshold: 60000 });
    expect(() => exportFromSpec('vhost-user:bdev=m0,socket=/s,iops-threshold=99')).toThrow('vhost-user: iops-threshold=99 must be an integer in 100..4294967295');
    expect(() => exportFromSpec('vduse:bdev=m0,delay-base-us=2000000')).toThrow('vduse: delay-base-us=2000000 must be an integer in 0..1000000');
    expect(() => exportFromSpec('vduse:bdev=m0,delay-base-us=-1')).toThrow(/delay-base-us=-1/);
  });

  test('cpumask: a hex mask or a list, kept as the hex mask SPDK prints', () => {
    expect(exportFromSpec('vhost-user:bdev=m0,socket=/s,cpumask=1-2').cpumask).toBe('0x6');
    expect(exportFromSpec('vduse:bdev=m0,cpumask=0x1').cpumask).toBe('0x1');
    expect(() => exportFromSpec('vduse:bdev=m0,cpumask=zz')).toThrow(/vduse: cpumask zz: use a hex mask such as 0x3/);
  });

  const bad: [string, () => unknown, RegExp][] = [
    ['unknown bdev type', () => bdevFromSpec('ram:name=x'), /unknown type 'ram'; known types: null, malloc, file/],
    ['unknown bdev key', () => bdevFromSpec('malloc:name=m,sise=1G'), /unknown key 'sise'; known keys: name, size, block-size/],
    ['missing name', () => bdevFromSpec('malloc:size=1G'), /missing name=/],
    ['not key=value', () => bdevFromSpec('malloc:name'), /'name' is not key=value/],
    ['duplicate key', () => bdevFromSpec('malloc:name=a,name=b'), /key 'name' given twice/],
    ['bad queue count', () => exportFromSpec('vhost-user:bdev=m,socket=/s,num-queues=0'), /num-queues=0 must be an integer in 1..64/],
    ['missing socket', () => exportFromSpec('vhost-user:bdev=m'), /missing socket=/],
    ['long serial', () => exportFromSpec('vhost-user:bdev=m,socket=/s,serial=123456789012345678901'), /serial=.* at most 20/],
    ['bad readonly', () => exportFromSpec('vhost-user:bdev=m,socket=/s,readonly=maybe'), /readonly=maybe: must be on or off/],
    ['bad mode', () => exportFromSpec('vhost-user:bdev=m,socket=/s,mode=999'), /mode=999 must be an octal/],
    ['unknown export type', () => exportFromSpec('nbd:bdev=m'), /unknown export type 'nbd'/],
    ['vduse: bad bus', () => exportFromSpec('vduse:bdev=m,bus=pci'), /bus=pci must be virtio, vhost or none/],
    ['vduse: queue size not a power of two', () => exportFromSpec('vduse:bdev=m,queue-size=1000'), /queue-size=1000 must be a power of two/],
    ['vduse: bad name', () => exportFromSpec('vduse:bdev=m,name=a/b'), /name=a\/b must be/],
    ['bad logical block size', () => exportFromSpec('vduse:bdev=m,logical-block-size=1024'), /logical-block-size=1024 must be 512 or 4096/],
  ];
  for (const [name, f, msg] of bad) test(`error: ${name}`, () => expect(f).toThrow(msg));

  test('cpumask: hex masks and lists', () => {
    expect(parseCpumask('0x3')).toEqual([0, 1]);
    expect(parseCpumask('a')).toEqual([1, 3]);
    expect(parseCpumask('0,2-3')).toEqual([0, 2, 3]);
    expect(() => parseCpumask('0x0')).toThrow(/hex mask such as 0x3/);
    expect(() => parseCpumask('3-1')).toThrow(/list such as 0,2-3/);
  });

  test('sizes', () => {
    expect(parseSize('size', '1G')).toBe(2 ** 30);
    expect(parseSize('size', '512M')).toBe(512 * 2 ** 20);
    expect(parseSize('size', '64KiB')).toBe(65536);
    expect(() => parseSize('size', '1.5G')).toThrow(/not a size/);
    expect(() => parseSize('size', '0')).toThrow(/positive/);
    expect(() => parseSize('size', '1000', 512)).toThrow(/multiple of 512/);
  });

  test('cross-checks: exports name existing bdevs, names and sockets are unique', () => {
    const b = [bdevFromSpec('malloc:name=m0,size=1G')];
    expect(() => validateConfig({ reactors: 1, cpus: [], idleSpinUs: 0, bdevs: b, exports: [exportFromSpec('vhost-user:bdev=m9,socket=/s')] })).toThrow(
      /bdev=m9 is not defined; defined bdevs: m0/,
    );
    expect(() => validateConfig({ reactors: 1, cpus: [], idleSpinUs: 0, bdevs: [...b, ...b], exports: [] })).toThrow(/used twice/);
    const x = exportFromSpec('vhost-user:bdev=m0,socket=/s');
    expect(() => validateConfig({ reactors: 1, cpus: [], idleSpinUs: 0, bdevs: b, exports: [x, { ...x, name: 'other' }] })).toThrow(/used by two exports/);
  });

  test('JSON config file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vdx-cfg-'));
    const f = join(dir, 'c.json');
    writeFileSync(f, JSON.stringify({ reactors: 2, bdevs: [{ type: 'null', name: 'n0', size: '1G' }], exports: [{ type: 'vhost-user', bdev: 'n0', socket: '/s', 'num-queues': 4 }] }));
    const c = loadConfigFile(f);
    expect(c.reactors).toBe(2);
    expect(c.bdevs).toEqual([{ type: 'null', name: 'n0', size: '1G' }]);
    expect(c.exports?.[0]?.numQueues).toBe(4);
    writeFileSync(f, JSON.stringify({ bdev: [] }));
    expect(() => loadConfigFile(f)).toThrow(/unknown key 'bdev'; known keys: modules, reactors, cpumask, idleSpinUs, bdevs, exports/);
    writeFileSync(f, '{');
    expect(() => loadConfigFile(f)).toThrow(/--config .*c.json/);
  });
});
