// sd_notify against a real AF_UNIX datagram listener, and the systemd unit
// against systemd-analyze. Node cannot bind a unix datagram socket, so the
// listener is a python3 child that prints each datagram as a JSON line.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { E, loadNative } from '../../src/native/index.js';
import { SystemdNotifier, type NotifyNative } from '../../src/systemd/notify.js';

const n = loadNative();
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const UNIT = join(dirname(fileURLToPath(import.meta.url)), '../../contrib/systemd/vdx.service');

// argv[1]: a path or '@name'; argv[2] == 'noread': bind and never read (a full queue).
// Prints {"bound":true} once bound, then {"hex": datagram, "monoUs": CLOCK_MONOTONIC at receipt}.
const LISTENER = `
import json, socket, sys, time
a = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + a[1:] if a[0] == '@' else a)
print(json.dumps({'bound': True}), flush=True)
if len(sys.argv) > 2 and sys.argv[2] == 'noread':
    sys.stdin.read()
    sys.exit(0)
while True:
    d = s.recv(65536)
    print(json.dumps({'hex': d.hex(), 'monoUs': time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}), flush=True)
`;

interface Datagram {
  bytes: Buffer;
  text: string;
  monoUs: number;
}

class Listener {
  readonly got: Datagram[] = [];
  private waiters: (() => void)[] = [];
  private constructor(
    readonly address: string,
    private readonly child: ChildProcess,
  ) {}

  static async start(address: string, mode = ''): Promise<Listener> {
    const child = spawn(PYTHON, ['-c', LISTENER, address, ...(mode ? [mode] : [])], { stdio: ['pipe', 'pipe', 'inherit'] });
    const l = new Listener(address, child);
    let bound!: () => void;
    const isBound = new Promise<void>((resolve, reject) => {
      bound = resolve;
      child.once('exit', (code) => reject(new Error(`listener exited (${code}) before binding ${address}`)));
      child.once('error', reject);
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const o = JSON.parse(line) as { bound?: boolean; hex?: string; monoUs?: number };
      if (o.bound) return bound();
      const bytes = Buffer.from(o.hex!, 'hex');
      l.got.push({ bytes, text: bytes.toString('utf8'), monoUs: o.monoUs! });
      for (const w of l.waiters.splice(0)) w();
    });
    await isBound;
    return l;
  }

  /** The first `count` datagrams, once they have arrived (or fail after 5 s). */
  async take(count: number): Promise<Datagram[]> {
    const deadline = Date.now() + 5000;
    while (this.got.length < count) {
      if (Date.now() > deadline) throw new Error(`got ${this.got.length} datagrams, wanted ${count}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return this.got.slice(0, count);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }
}

function fakeLog() {
  const warns: { obj: Record<string, unknown>; msg: string }[] = [];
  return { warns, warn: (obj: object, msg: string) => void warns.push({ obj: obj as Record<string, unknown>, msg }) };
}

let dir: string;
const listeners: Listener[] = [];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vdx-notify-'));
});
afterEach(async () => {
  for (const l of listeners.splice(0)) await l.stop();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function listen(address: string, mode = ''): Promise<Listener> {
  const l = await Listener.start(address, mode);
  listeners.push(l);
  return l;
}
const abstractName = () => `@vdx-test-${randomBytes(6).toString('hex')}`;

describe('unixDgramSend (native)', () => {
  test('one datagram to a path socket and to an abstract one, byte for byte', async () => {
    const bytes = new Uint8Array([0x41, 0x00, 0xff, 0x0a, 0x42]);
    for (const address of [join(dir, 'raw.sock'), abstractName()]) {
      const l = await listen(address);
      expect(n.unixDgramSend(address, bytes)).toBe(5);
      expect(n.unixDgramSend(address, Buffer.from('second'))).toBe(6);
      const [a, b] = await l.take(2);
      expect(a!.bytes).toEqual(Buffer.from(bytes));
      expect(b!.text).toBe('second');
    }
  });

  test('an abstract name is not the path of the same spelling', async () => {
    const name = abstractName();
    await listen(join(dir, name.slice(1)));
    expect(n.unixDgramSend(name, Buffer.from('x'))).toBe(-E.ECONNREFUSED);
  });

  const bad: [string, string, number][] = [
    ['missing path', '/nonexistent-vdx-dir/notify', -E.ENOENT],
    ['empty', '', -E.EINVAL],
    ['path without room for its NUL (108 bytes)', `/${'a'.repeat(107)}`, -E.EINVAL],
    ['abstract name of 108 bytes', `@${'a'.repeat(107)}`, -E.EINVAL],
    ['abstract name nobody bound', abstractName(), -E.ECONNREFUSED],
  ];
  for (const [name, address, want] of bad) test(name, () => expect(n.unixDgramSend(address, Buffer.from('READY=1'))).toBe(want));

  test('a socket file with no listener left is -ECONNREFUSED', async () => {
    const path = join(dir, 'stale.sock');
    const l = await listen(path);
    await l.stop();
    expect(existsSync(path)).toBe(true);
    expect(n.unixDgramSend(path, Buffer.from('READY=1'))).toBe(-E.ECONNREFUSED);
  });

  test('a receiver that never reads gives -EAGAIN, never blocks', async () => {
    const path = join(dir, 'full.sock');
    await listen(path, 'noread');
    let rc = 0;
    for (let i = 0; i < 100_000 && rc >= 0; i++) rc = n.unixDgramSend(path, Buffer.from('STATUS=filling'));
    expect(rc).toBe(-E.EAGAIN);
  });

  test('argument types are checked', () => {
    const f = n.unixDgramSend as unknown as (...a: unknown[]) => number;
    expect(() => f('/x', new Uint16Array(1))).toThrow(TypeError);
    expect(() => f('/x', 'READY=1')).toThrow(TypeError);
    expect(() => f(3, new Uint8Array(1))).toThrow(TypeError);
    expect(() => f('/x')).toThrow(TypeError);
  });

  test('clockMonotonicUs is CLOCK_MONOTONIC', async () => {
    const l = await listen(abstractName());
    const before = n.clockMonotonicUs();
    n.unixDgramSend(l.address, Buffer.from('t'));
    const [d] = await l.take(1);
    expect(before).toBeGreaterThan(0);
    expect(d!.monoUs).toBeGreaterThanOrEqual(before);
    expect(d!.monoUs - before).toBeLessThan(5_000_000);
  });
});

describe('SystemdNotifier', () => {
  for (const kind of ['path', 'abstract'] as const) {
    test(`READY, STATUS, STOPPING and RELOADING datagrams (${kind} socket)`, async () => {
      const address = kind === 'path' ? join(dir, 'notify.sock') : abstractName();
      const l = await listen(address);
      const log = fakeLog();
      const env = { NOTIFY_SOCKET: address };
      const sd = new SystemdNotifier({ log, env });
      expect(sd.enabled).toBe(true);
      expect(sd.socket).toBe(address);
      const before = n.clockMonotonicUs();
      expect(sd.ready()).toBe(0);
      expect(sd.ready('serving 2 exports')).toBe(0);
      expect(sd.status('2 exports, 1 reactor')).toBe(0);
      expect(sd.status('line one\nMAINPID=1\r\0')).toBe(0);
      expect(sd.reloading()).toBe(0);
      expect(sd.stopping()).toBe(0);
      expect(sd.stopping('SIGTERM')).toBe(0);
      const got = await l.take(7);
      expect(got.map((d) => d.text)).toEqual([
        'READY=1',
        'READY=1\nSTATUS=serving 2 exports',
        'STATUS=2 exports, 1 reactor',
        'STATUS=line one MAINPID=1  ',
        expect.stringMatching(/^RELOADING=1\nMONOTONIC_USEC=\d+$/),
        'STOPPING=1',
        'STOPPING=1\nSTATUS=SIGTERM',
      ]);
      const reload = got[4]!;
      const us = Number(/MONOTONIC_USEC=(\d+)/.exec(reload.text)![1]);
      expect(us).toBeGreaterThanOrEqual(before);
      expect(us).toBeLessThanOrEqual(reload.monoUs); // the listener's own CLOCK_MONOTONIC
      expect(log.warns).toEqual([]);
      expect(env).toEqual({ NOTIFY_SOCKET: address }); // left for whoever reads it next
    });
  }

  test('reads process.env by default and leaves NOTIFY_SOCKET in it', async () => {
    const l = await listen(abstractName());
    const saved = process.env.NOTIFY_SOCKET;
    process.env.NOTIFY_SOCKET = l.address;
    try {
      expect(new SystemdNotifier({ log: fakeLog() }).ready()).toBe(0);
      expect(process.env.NOTIFY_SOCKET).toBe(l.address);
    } finally {
      if (saved === undefined) delete process.env.NOTIFY_SOCKET;
      else process.env.NOTIFY_SOCKET = saved;
    }
    expect((await l.take(1))[0]!.text).toBe('READY=1');
  });

  function recordingNative() {
    const calls: string[] = [];
    const native: NotifyNative = {
      unixDgramSend: (path) => {
        calls.push(path);
        return 0;
      },
      clockMonotonicUs: () => {
        calls.push('clock');
        return 1;
      },
    };
    return { calls, native };
  }

  for (const [name, env] of [
    ['unset', {}],
    ['empty', { NOTIFY_SOCKET: '' }],
  ] as const) {
    test(`NOTIFY_SOCKET ${name}: every call is a no-op`, () => {
      const log = fakeLog();
      const { calls, native } = recordingNative();
      const sd = new SystemdNotifier({ log, env, native });
      expect(sd.enabled).toBe(false);
      expect(sd.socket).toBeUndefined();
      expect([sd.ready('x'), sd.status('x'), sd.reloading(), sd.stopping()]).toEqual([0, 0, 0, 0]);
      expect(calls).toEqual([]);
      expect(log.warns).toEqual([]);
    });
  }

  for (const bad of ['run/systemd/notify', 'vsock:2:1234', ' /run/systemd/notify']) {
    test(`NOTIFY_SOCKET '${bad}': warned about once, then disabled`, () => {
      const log = fakeLog();
      const { calls, native } = recordingNative();
      const sd = new SystemdNotifier({ log, env: { NOTIFY_SOCKET: bad }, native });
      expect(sd.enabled).toBe(false);
      expect([sd.ready(), sd.stopping()]).toEqual([0, 0]);
      expect(calls).toEqual([]);
      expect(log.warns).toHaveLength(1);
      expect(log.warns[0]!.obj).toMatchObject({ component: 'systemd', socket: bad });
    });
  }

  test('NOTIFY_SOCKET at a missing path: -ENOENT, one warning, never a throw', () => {
    const log = fakeLog();
    const path = join(dir, 'nobody-here.sock');
    const sd = new SystemdNotifier({ log, env: { NOTIFY_SOCKET: path } });
    expect(sd.enabled).toBe(true);
    expect(sd.ready('up')).toBe(-E.ENOENT);
    expect(sd.status('still up')).toBe(-E.ENOENT);
    expect(sd.reloading()).toBe(-E.ENOENT);
    expect(sd.stopping()).toBe(-E.ENOENT);
    expect(log.warns).toHaveLength(1);
    expect(log.warns[0]!.obj).toMatchObject({ component: 'systemd', socket: path, errno: 'ENOENT', state: 'READY=1' });
  });

  test('a listener that went away: -ECONNREFUSED, one warning', async () => {
    const path = join(dir, 'gone.sock');
    const l = await listen(path);
    const log = fakeLog();
    const sd = new SystemdNotifier({ log, env: { NOTIFY_SOCKET: path } });
    expect(sd.ready()).toBe(0);
    await l.take(1);
    await l.stop();
    expect(sd.stopping()).toBe(-E.ECONNREFUSED);
    expect(sd.stopping()).toBe(-E.ECONNREFUSED);
    expect(log.warns.map((w) => w.obj.errno)).toEqual(['ECONNREFUSED']);
  });
});

// systemd-analyze verify prints "…, ignoring" for a bad value or an unknown key
// and still exits 0, so a clean unit means exit 0 *and* nothing on stderr. It
// also checks that ExecStart's binary exists: verify in a scratch root holding
// the distribution's units, the unit at /etc/systemd/system and an executable
// stub at /usr/local/bin/vdx (the real one is installed by `npm install -g`).
describe('contrib/systemd/vdx.service', () => {
  const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  const haveAnalyze = analyze.status === 0;
  const units = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((d) => existsSync(join(d, 'sysinit.target')));
  if (!haveAnalyze) console.warn(`skipping systemd-analyze tests: systemd-analyze not found (${analyze.error?.message ?? analyze.stderr}); scripts/install-deps.sh installs it`);
  else if (!units) console.warn('skipping systemd-analyze tests: no systemd unit directory with sysinit.target');

  function verify(unitText: string, withStub = true): { status: number | null; stderr: string } {
    const root = mkdtempSync(join(tmpdir(), 'vdx-unit-root-'));
    try {
      cpSync(units!, join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
      mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
      writeFileSync(join(root, 'etc/systemd/system/vdx.service'), unitText);
      if (withStub) {
        mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
        writeFileSync(join(root, 'usr/local/bin/vdx'), '#!/bin/sh\nexit 0\n');
        chmodSync(join(root, 'usr/local/bin/vdx'), 0o755);
      }
      const r = spawnSync('systemd-analyze', ['verify', `--root=${root}`, '--man=no', 'vdx.service'], { encoding: 'utf8', timeout: 30_000 });
      return { status: r.status, stderr: r.stderr.trim() };
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }

  const unit = readFileSync(UNIT, 'utf8');

  test.skipIf(!haveAnalyze || !units)('systemd-analyze verify: exit 0, no complaints', () => {
    expect(verify(unit)).toEqual({ status: 0, stderr: '' });
  });

  // The check above must be able to fail: each row is a mistake it catches.
  const edit = (from: RegExp, to: string) => {
    const text = unit.replace(from, to);
    if (text === unit) throw new Error(`${String(from)} matches nothing in the unit`);
    return text;
  };
  const broken: [string, string, boolean, RegExp][] = [
    ['no /usr/local/bin/vdx', unit, false, /\/usr\/local\/bin\/vdx is not executable/],
    ['unknown Type=', edit(/^Type=notify$/m, 'Type=notfy'), true, /service type/],
    ['misspelt key', edit(/^NotifyAccess=/m, 'NotifyAcess='), true, /Unknown key 'NotifyAcess'/],
    ['bad limit', edit(/^LimitNOFILE=.*$/m, 'LimitNOFILE=lots'), true, /resource value/],
  ];
  for (const [name, text, withStub, want] of broken) {
    test.skipIf(!haveAnalyze || !units)(`systemd-analyze verify catches: ${name}`, () => {
      expect(verify(text, withStub).stderr).toMatch(want);
    });
  }

  test('the unit says what the daemon does', () => {
    const service = (key: string) => [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]);
    expect(service('Type')).toEqual(['notify']);
    expect(service('NotifyAccess')).toEqual(['main']);
    expect(service('ExecStart')).toEqual(['/usr/local/bin/vdx serve --config /etc/vdx/vdx.json --rpc-socket /run/vdx/vdx.rpc.sock --vhost-socket-dir /run/vdx-vhost --log-format json']);
    expect(service('RuntimeDirectory')).toEqual(['vdx']);
    expect(service('RuntimeDirectoryMode')).toEqual(['0700']);
    expect(service('ExecReload')).toEqual([]); // the daemon has no reload
    expect(service('WantedBy')).toEqual(['multi-user.target']);
    const pkg = JSON.parse(readFileSync(join(dirname(UNIT), '../../package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(pkg.bin.vdx).toBe('dist/cli/main.js'); // what `npm install -g` links to /usr/local/bin/vdx
  });
});
