// The real-kernel bench: boot the Debian 13 (6.12) kernel under QEMU TCG with the
// host root shared read-only over 9p, run a bash script in the guest and return
// its exit status and output. See scripts/vm/ for how the assets are made.
//
// Every process started here (QEMU, peers, clients) is tracked and killed by
// killTracked(), which the e2e files call in afterEach: no test leaves one behind.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseGuestConsole } from './console.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CACHE = process.env.VDX_CACHE ?? '/var/cache/vdx';
export const KERNEL = join(CACHE, 'kernel/current/vmlinuz');
export const INITRAMFS = join(CACHE, 'initramfs.gz');
/** Where the guest sees this repository (read-only), wherever it was cloned on the host. */
export const GUEST_SRC = '/run/vdx-src';
export const LOG_DIR = join(REPO, 'test-results/e2e');
const IN_USERLAND = join(REPO, 'scripts/vm/in-userland.sh');

// ---------------------------------------------------------------- processes

const tracked = new Set<ChildProcess>();

/**
 * spawn() in a process group of its own, remembered until it exits, so that
 * killTracked() can end it with everything it started (chroot, unshare, ...).
 */
export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts, detached: true });
  tracked.add(child);
  child.once('exit', () => tracked.delete(child));
  child.once('error', () => tracked.delete(child));
  return child;
}

function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    // already gone
  }
}

export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((res) => child.once('exit', (code) => res(code)));
}

/** SIGTERM every tracked process group, then SIGKILL what is left after graceMs. */
export async function killTracked(graceMs = 3000): Promise<void> {
  const live = [...tracked];
  for (const c of live) signalGroup(c, 'SIGTERM');
  const timer = new Promise((res) => setTimeout(res, graceMs));
  await Promise.race([Promise.all(live.map(exited)), timer]);
  for (const c of live) if (c.exitCode === null && c.signalCode === null) signalGroup(c, 'SIGKILL');
  await Promise.all(live.map(exited));
}

process.once('exit', () => {
  for (const c of tracked) signalGroup(c, 'SIGKILL');
});

/** Collect a child's stdout and stderr, and wait for it. */
export async function run(
  cmd: string,
  args: string[],
  opts: SpawnOptions & { timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnTracked(cmd, args, opts);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const timer = setTimeout(() => signalGroup(child, 'SIGKILL'), timeoutMs);
  const code = await exited(child);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Run a command in the Debian 13 userland (libblkio clients, QEMU 10) on this host. */
export function runInUserland(args: string[], timeoutMs = 60_000): ReturnType<typeof run> {
  return run(IN_USERLAND, args, { timeoutMs });
}

// ---------------------------------------------------------------- guests

export interface GuestOptions {
  /** Names the console log: test-results/e2e/<name>.console.log */
  name: string;
  /** Bash run as root in the guest, cwd = the run share ($VDX_RUN), stdin /dev/null. */
  script: string;
  /** Exported before the script runs. */
  env?: Record<string, string>;
  qemuArgs?: string[];
  memMiB?: number;
  cpus?: number;
  /** Back guest RAM with a shared memfd, as vhost-user needs. */
  sharedMemory?: boolean;
  timeoutMs?: number;
  /**
   * Runs on the host while the guest runs; it sees the run share's host path
   * (the guest's $VDX_RUN), so the two can hand each other files. `guestExited`
   * aborts when QEMU exits, so a hook waiting on the guest can give up at once.
   */
  whileRunning?: (runDir: string, guestExited: AbortSignal) => Promise<void>;
}

export interface GuestResult {
  status: number;
  output: string;
  durationMs: number;
  consoleLog: string;
  /** how many boots it took (more than 1 when a boot died on the TCG int3 artifact and the guest was booted again) */
  boots: number;
}

export function benchReady(): string | undefined {
  for (const f of [KERNEL, INITRAMFS]) {
    if (!existsSync(f)) return `${f} is missing: run 'bash scripts/vm/prepare.sh' (npm run bench:prepare)`;
  }
  return undefined;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Boot a guest, run `script`, power off. Resolves with the script's status and
 * output; rejects (with the console tail) on timeout or if the guest never
 * reached or finished the script.
 */
export async function runGuest(o: GuestOptions): Promise<GuestResult> {
  // Multi-threaded TCG occasionally runs a half-patched kernel text_poke site
  // (static keys) and the guest dies on the int3 it leaves: an emulator
  // artifact, not something the code under test did. Boot again then, up to
  // twice (CI once saw it on two boots in a row).
  for (let boot = 1; ; boot++) {
    try {
      return { ...(await runGuestOnce(o)), boots: boot };
    } catch (e) {
      if (boot === MAX_BOOTS || !(e instanceof GuestCrash) || !/Oops: int3/.test(e.console)) throw e;
      process.stderr.write(`guest ${o.name}: kernel hit a TCG text-patching int3; booting again\n`);
    }
  }
}
const MAX_BOOTS = 3;

class GuestCrash extends Error {
  constructor(
    message: string,
    readonly console: string,
  ) {
    super(message);
  }
}

async function runGuestOnce(o: GuestOptions): Promise<GuestResult> {
  const missing = benchReady();
  if (missing) throw new Error(missing);
  mkdirSync(LOG_DIR, { recursive: true });
  const runDir = mkdtempSync(join(tmpdir(), `vdx-guest-${o.name}-`));
  const consoleLog = join(LOG_DIR, `${o.name}.console.log`);
  const nonce = randomBytes(8).toString('hex');
  const mem = o.memMiB ?? 2048;
  try {
    const env = { VDX_SRC: GUEST_SRC, VDX_CACHE: CACHE, ...o.env };
    const prelude = Object.entries(env)
      .map(([k, v]) => `export ${k}=${shellQuote(v)}`)
      .join('\n');
    writeFileSync(join(runDir, 'script.sh'), `${prelude}\n${o.script}\n`);
    writeFileSync(join(runDir, 'mounts'), `vdxsrc ${GUEST_SRC} ro\n`);

    const args = [
      '-accel', 'tcg,thread=multi',
      '-smp', String(o.cpus ?? 2),
      '-m', `${mem}M`,
      '-nographic', '-no-reboot', '-nic', 'none',
      '-kernel', KERNEL,
      '-initrd', INITRAMFS,
      '-append', `console=ttyS0 quiet loglevel=4 panic=-1 vdx_nonce=${nonce} vdx_run=1`,
      '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap',
      '-virtfs', `local,path=${runDir},mount_tag=vdxrun,security_model=passthrough,multidevs=remap`,
      '-virtfs', `local,path=${REPO},mount_tag=vdxsrc,security_model=passthrough,readonly=on,multidevs=remap`,
    ];
    if (o.sharedMemory) {
      args.push('-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`, '-machine', 'memory-backend=mem');
    }
    args.push(...(o.qemuArgs ?? []));

    const started = Date.now();
    const qemu = spawnTracked('qemu-system-x86_64', args);
    const log = createWriteStream(consoleLog);
    let text = '';
    const collect = (d: Buffer) => {
      log.write(d);
      text += d.toString('utf8');
    };
    qemu.stdout?.on('data', collect);
    qemu.stderr?.on('data', collect);

    const timeoutMs = o.timeoutMs ?? 180_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      signalGroup(qemu, 'SIGKILL');
    }, timeoutMs);
    let sideError: unknown;
    const guestExited = new AbortController();
    const side = o.whileRunning?.(runDir, guestExited.signal).catch((e: unknown) => {
      sideError = e;
      signalGroup(qemu, 'SIGKILL');
    });
    const code = await exited(qemu);
    guestExited.abort();
    clearTimeout(timer);
    await side;
    await new Promise<void>((res) => log.end(res));
    // A guest that died on the TCG int3 artifact is retried by runGuest, whatever the hook made of it.
    if (sideError && /Oops: int3/.test(text) && parseGuestConsole(text, nonce).status === undefined) {
      throw new GuestCrash(`guest ${o.name}: kernel died (TCG int3) while the host side waited`, text);
    }
    if (sideError) throw sideError;
    const durationMs = Date.now() - started;

    const tail = () => text.split('\n').slice(-40).join('\n');
    if (timedOut) throw new Error(`guest ${o.name}: no result after ${timeoutMs / 1000} s; console tail:\n${tail()}`);
    const parsed = parseGuestConsole(text, nonce);
    if (parsed.status === undefined) {
      throw new GuestCrash(`guest ${o.name}: QEMU exited (${code}) before the script finished; console tail:\n${tail()}`, text);
    }
    if (parsed.status === 125) throw new Error(`guest ${o.name}: guest init failed; console tail:\n${tail()}`);
    return { status: parsed.status, output: parsed.output, durationMs, consoleLog, boots: 1 };
  } finally {
    // Keep what the guest left in the run share (daemon logs) next to the console log.
    try {
      for (const f of readdirSync(runDir)) {
        if (f.endsWith('.log')) copyFileSync(join(runDir, f), join(LOG_DIR, `${o.name}.${f}`));
      }
    } catch {
      // nothing to keep
    }
    rmSync(runDir, { recursive: true, force: true });
  }
}

/** Throw with the script's output when it failed, so a red test says why. */
export function expectGuestOk(r: GuestResult): GuestResult {
  if (r.status !== 0) {
    throw new Error(`guest script exited ${r.status} (console: ${r.consoleLog}); output:\n${r.output.slice(-6000)}`);
  }
  return r;
}

/** Wait until `path` exists, or fail early if `child` dies first. */
export async function waitForPath(path: string, child: ChildProcess, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before creating ${path}`);
    if (Date.now() > deadline) throw new Error(`${what} did not create ${path} within ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/**
 * Start `vdx serve ARGS` and resolve once it logs that it serves (a killed
 * one's socket files may still be there, so their presence proves nothing);
 * `log()` is what it has written to stderr so far.
 */
export async function serveVdx(args: string[], timeoutMs = 20_000): Promise<{ proc: ChildProcess; log: () => string }> {
  const proc = spawnTracked(process.execPath, [join(REPO, 'dist/cli/main.js'), 'serve', ...args]);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vdx did not serve within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    proc.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"msg":"serving ')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`vdx exited (${code}):\n${out}`));
    });
  });
  return { proc, log: () => out };
}

/** Record a measured figure for the closing note / README (test-results/e2e/timings.jsonl). */
export function recordTiming(name: string, durationMs: number): void {
  mkdirSync(LOG_DIR, { recursive: true });
  writeFileSync(join(LOG_DIR, 'timings.jsonl'), `${JSON.stringify({ name, durationMs, at: new Date().toISOString() })}\n`, {
    flag: 'a',
  });
}

export function readText(path: string): string {
  return readFileSync(path, 'utf8');
}

/** Answer the guest's req-NAME files by running actions[NAME], then writing ack-NAME. */
export async function serveRequests(runDir: string, stop: AbortSignal, actions: Record<string, () => Promise<void>>): Promise<void> {
  const done = new Set<string>();
  while (!stop.aborted) {
    for (const [name, act] of Object.entries(actions)) {
      if (done.has(name) || !existsSync(join(runDir, `req-${name}`))) continue;
      done.add(name);
      await act();
      writeFileSync(join(runDir, `ack-${name}`), '');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
