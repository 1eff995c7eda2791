// NBD servers for the e2e tests: qemu-nbd and nbdkit on unix sockets or
// 127.0.0.1 only, started tracked (killTracked() reaps them) and restartable.
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { exited, LOG_DIR, spawnTracked } from './vm.js';

/** A free TCP port on 127.0.0.1 (bound and released; the server binds it next). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

/**
 * Wait until the server takes a connection (closed again at once). For a unix
 * socket the path alone proves nothing: it exists from bind(), and a connect
 * before listen() is refused.
 */
async function waitForListener(at: { path: string } | { host: string; port: number }, child: ChildProcess, what: string, timeoutMs = 15_000): Promise<void> {
  const where = 'path' in at ? at.path : `${at.host}:${at.port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited before listening on ${where}`);
    const ok = await new Promise<boolean>((res) => {
      const c = connect(at, () => {
        c.destroy();
        res(true);
      });
      c.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${where} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface NbdServerOptions {
  /** qemu-nbd or nbdkit */
  kind: 'qemu-nbd' | 'nbdkit';
  /** unix socket path, or a TCP port on 127.0.0.1 */
  socket?: string;
  port?: number;
  /** qemu-nbd: image and options; nbdkit: plugin, its arguments and --filter=... */
  args: string[];
  logName: string;
  /**
   * Start it again when it dies on its own (not by kill/stop), as a service
   * manager would: nbdkit 1.32 can abort on a connection its client closed
   * with replies in flight (connections.c raw_send_socket: Assertion
   * `sock >= 0' failed). Only for a server whose data outlives it (a file).
   */
  restartIfItDies?: boolean;
}

/** One server process; start() again after kill() restarts it on the same address. */
export class NbdServer {
  private child: ChildProcess | undefined;
  private starts = 0;
  /** the last start, so a caller can wait for a server being started again */
  private starting: Promise<void> = Promise.resolve();
  /** how often it died on its own and was started again */
  deaths = 0;

  constructor(readonly o: NbdServerOptions) {}

  get uri(): string {
    return this.o.socket !== undefined ? `nbd+unix:///?socket=${this.o.socket}` : `nbd://127.0.0.1:${this.o.port}/`;
  }

  start(): Promise<void> {
    this.starting = this.spawn();
    return this.starting;
  }

  /** Resolves once the server listens (after a start, or a restart after it died). */
  ready(): Promise<void> {
    return this.starting;
  }

  private async spawn(): Promise<void> {
    const o = this.o;
    // nbdkit leaves its socket behind; qemu-nbd refuses a stale one.
    if (o.socket) rmSync(o.socket, { force: true });
    const where =
      o.kind === 'qemu-nbd'
        ? o.socket ? ['-k', o.socket] : ['-b', '127.0.0.1', '-p', String(o.port)]
        : o.socket ? ['-U', o.socket] : ['-i', '127.0.0.1', '-p', String(o.port)];
    const args = o.kind === 'qemu-nbd' ? ['-t', ...where, ...o.args] : ['-f', '--exit-with-parent', ...where, ...o.args];
    this.child = spawnTracked(o.kind, args);
    mkdirSync(LOG_DIR, { recursive: true });
    const log = createWriteStream(join(LOG_DIR, `${o.logName}.${++this.starts}.log`));
    this.child.stdout?.pipe(log, { end: false });
    this.child.stderr?.pipe(log, { end: false });
    // A server that dies on its own (not by kill/stop below) says how, for the test's log.
    const child = this.child;
    child.once('exit', (code, signal) => {
      const onItsOwn = this.child === child;
      if (onItsOwn) log.write(`\n[test] ${o.kind} exited on its own: code ${code}, signal ${signal}${o.restartIfItDies ? '; starting it again' : ''}\n`);
      log.end();
      if (onItsOwn && o.restartIfItDies) {
        this.deaths++;
        this.child = undefined;
        void this.start().catch(() => {});
      }
    });
    await waitForListener(o.socket ? { path: o.socket } : { host: '127.0.0.1', port: o.port! }, this.child, o.kind);
  }

  /** SIGKILL: no goodbye to the clients, as when a server crashes. */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c) return;
    this.child = undefined;
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await exited(c);
  }

  /** SIGSTOP/SIGCONT: a server that keeps its connections but stops (or resumes) answering. */
  signal(sig: 'SIGSTOP' | 'SIGCONT'): void {
    this.child?.kill(sig);
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (!c) return;
    this.child = undefined;
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await exited(c);
  }
}
