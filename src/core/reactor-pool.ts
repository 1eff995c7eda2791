// Main-thread side of the reactors: starts the workers, sends them requests and
// places queues on the least loaded one.
import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { NativeShim } from '../native/index.js';
import type { QueueSpec, QueueStopped, ReactorInit, ReactorReply, ReactorRequest, ReactorStats } from './messages.js';
import { allocReactorCounters, ReactorCounterReader, type ReactorCounters } from './reactor-counters.js';

export interface ReactorEvents {
  broken: [id: string, why: string];
  log: [level: 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>];
}

/** What a frontend needs of a reactor: start, stop and re-signal its queues. */
export interface QueueHost {
  readonly index: number;
  addQueue(q: QueueSpec): Promise<void>;
  stopQueue(id: string): Promise<QueueStopped>;
  setCall(id: string, callFd: number): Promise<void>;
  queueState(id: string): Promise<QueueStopped>;
}

/** Chooses the reactor for a new queue. */
export interface QueuePlacer {
  pick(): QueueHost;
}

/**
 * Main thread: hands a frontend the counter buffer for one of its queues
 * (QueueSpec.counters). The same (export, queue index) gets the same buffer
 * every time, so counts carry on across reconnects. metrics/counters.ts's
 * CounterRegistry is the implementation.
 */
export interface QueueCounterSource {
  forQueue(exportName: string, bdevName: string, frontend: 'vhost-user' | 'vduse', queueIndex: number): SharedArrayBuffer;
}

export class ReactorHandle extends EventEmitter<ReactorEvents> implements QueueHost {
  private readonly worker: Worker;
  private readonly wakeFd: number;
  private readonly pending: Int32Array;
  private seq = 0;
  private readonly waiters = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** queues placed here, for placement decisions */
  load = 0;
  private exited = false;
  private readonly counterReader: ReactorCounterReader;

  constructor(
    private readonly native: NativeShim,
    readonly index: number,
    idleSpinUs: number,
    readonly cpus: number[] = [],
    bdevModules: string[] = [],
  ) {
    super();
    this.wakeFd = native.eventfd(0, native.EFD_NONBLOCK | native.EFD_CLOEXEC);
    const pending = new SharedArrayBuffer(4);
    this.pending = new Int32Array(pending);
    const counters = allocReactorCounters();
    this.counterReader = new ReactorCounterReader(index, counters);
    const init: ReactorInit = { index, wakeFd: this.wakeFd, pending, idleSpinUs, cpus, counters, bdevModules };
    this.worker = new Worker(new URL('./reactor-worker.js', import.meta.url), { workerData: init, name: `reactor${index}` });
    this.worker.on('message', (m: ReactorReply) => this.onMessage(m));
    this.worker.on('error', (e) => this.emit('log', 'error', `reactor ${index} failed: ${e.message}`));
    this.worker.on('exit', (code) => {
      this.exited = true;
      for (const w of this.waiters.values()) w.reject(new Error(`reactor ${index} exited (${code})`));
      this.waiters.clear();
    });
  }

  private onMessage(m: ReactorReply): void {
    if ('event' in m) {
      if (m.event === 'broken') this.emit('broken', m.id, m.why);
      else this.emit('log', m.level, m.msg, m.data);
      return;
    }
    const w = this.waiters.get(m.seq);
    if (!w) return;
    this.waiters.delete(m.seq);
    if (m.ok) w.resolve(m.result);
    else w.reject(new Error(m.error));
  }

  request(req: ReactorRequest): Promise<unknown> {
    if (this.exited) return Promise.reject(new Error(`reactor ${this.index} is not running`));
    const seq = ++this.seq;
    const p = new Promise<unknown>((resolve, reject) => this.waiters.set(seq, { resolve, reject }));
    this.worker.postMessage({ seq, req });
    Atomics.store(this.pending, 0, 1);
    this.native.eventfdWrite(this.wakeFd, 1);
    return p;
  }

  /** Start a queue here; the load was counted when the pool picked this reactor. */
  async addQueue(q: QueueSpec): Promise<void> {
    try {
      await this.request({ op: 'addQueue', queue: q });
    } catch (e) {
      this.load--;
      throw e;
    }
  }

  async stopQueue(id: string): Promise<QueueStopped> {
    const r = (await this.request({ op: 'stopQueue', id })) as QueueStopped;
    this.load--;
    return r;
  }

  async setCall(id: string, callFd: number): Promise<void> {
    await this.request({ op: 'setCall', id, callFd });
  }

  queueState(id: string): Promise<QueueStopped> {
    return this.request({ op: 'queueState', id }) as Promise<QueueStopped>;
  }

  async setSize(bdev: string, sizeBytes: number): Promise<void> {
    await this.request({ op: 'setSize', bdev, sizeBytes });
  }

  /** The main thread changed the bdev's shared settings: its channel here acts on them now. */
  async settingsChanged(bdev: string): Promise<void> {
    await this.request({ op: 'settingsChanged', bdev });
  }

  stats(): Promise<ReactorStats> {
    return this.request({ op: 'stats' }) as Promise<ReactorStats>;
  }

  /** Busy/idle time and sleeps, read from shared memory: no round trip, works while the reactor is busy. */
  counters(): ReactorCounters {
    return this.counterReader.read();
  }

  /** Stop the reactor; one that does not answer within `graceMs` is terminated. */
  async shutdown(graceMs = 5000): Promise<void> {
    if (!this.exited) {
      const exit = new Promise<void>((res) => (this.exited ? res() : this.worker.once('exit', () => res())));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), graceMs)));
      const r = await Promise.race([this.request({ op: 'shutdown' }).then(() => exit, () => exit), timeout]);
      clearTimeout(timer);
      if (r === 'timeout') {
        this.emit('log', 'error', `reactor ${this.index} did not stop within ${graceMs} ms; terminating it`);
        await this.worker.terminate();
      }
    }
    this.native.close(this.wakeFd);
  }
}

export class ReactorPool implements QueuePlacer {
  readonly reactors: ReactorHandle[];
  /** queue id -> who hears that it broke; one listener per reactor, whatever comes and goes */
  private readonly brokenHandlers = new Map<string, (why: string) => void>();

  /**
   * `cpus`: pin reactor i to cpus[i % cpus.length]; empty: no pinning.
   * `bdevModules`: user bdev modules (absolute paths) each reactor loads before it runs.
   */
  constructor(native: NativeShim, count: number, idleSpinUs: number, cpus: number[] = [], bdevModules: string[] = []) {
    this.reactors = Array.from(
      { length: count },
      (_, i) => new ReactorHandle(native, i, idleSpinUs, cpus.length ? [cpus[i % cpus.length]!] : [], bdevModules),
    );
    for (const r of this.reactors) r.on('broken', (id, why) => this.brokenHandlers.get(id)?.(why));
  }

  /** Hear when queue `id` breaks; returns the function that stops listening. */
  onBroken(id: string, handler: (why: string) => void): () => void {
    this.brokenHandlers.set(id, handler);
    return () => {
      if (this.brokenHandlers.get(id) === handler) this.brokenHandlers.delete(id);
    };
  }

  /** The least loaded reactor (ties: lowest index), counting the queue about to be placed. */
  pick(): ReactorHandle {
    return this.leastLoaded(this.reactors);
  }

  private leastLoaded(among: ReactorHandle[]): ReactorHandle {
    let best = among[0]!;
    for (const r of among) if (r.load < best.load) best = r;
    best.load++;
    return best;
  }

  /**
   * The reactors a cpumask selects (SPDK's meaning: the cores that may run a
   * controller): those pinned to a CPU in the mask; with unpinned reactors, bit
   * i is reactor i. Throws, saying what exists, when it selects none.
   */
  select(cpus: number[] | undefined): ReactorHandle[] {
    if (cpus === undefined) return this.reactors;
    const want = new Set(cpus);
    const pinned = this.reactors.every((r) => r.cpus.length > 0);
    const got = this.reactors.filter((r) => (pinned ? r.cpus.some((c) => want.has(c)) : want.has(r.index)));
    if (!got.length) {
      const have = pinned ? `reactors run on CPUs ${this.reactors.map((r) => r.cpus[0]).join(',')}` : `reactors are unpinned, numbered 0..${this.reactors.length - 1}`;
      throw new Error(`cpumask selects no reactor: ${have}`);
    }
    return got;
  }

  /** A placer over some reactors only (an export's cpumask). */
  placer(among: ReactorHandle[]): QueuePlacer {
    return { pick: () => this.leastLoaded(among) };
  }

  /** Every reactor's busy/idle counters, by index. */
  reactorCounters(): ReactorCounters[] {
    return this.reactors.map((r) => r.counters());
  }

  async shutdown(): Promise<void> {
    await Promise.all(this.reactors.map((r) => r.shutdown()));
  }
}
