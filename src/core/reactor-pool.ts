// Main-thread side of the reactors: starts the workers, sends them requests and
// places queues on the least loaded one.
import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { NativeShim } from '../native/index.js';
import type { QueueSpec, QueueStopped, ReactorInit, ReactorReply, ReactorRequest, ReactorStats } from './messages.js';

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

export class ReactorHandle extends EventEmitter<ReactorEvents> implements QueueHost {
  private readonly worker: Worker;
  private readonly wakeFd: number;
  private readonly pending: Int32Array;
  private seq = 0;
  private readonly waiters = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** queues placed here, for placement decisions */
  load = 0;
  private exited = false;

  constructor(
    private readonly native: NativeShim,
    readonly index: number,
    idleSpinUs: number,
    readonly cpus: number[] = [],
  ) {
    super();
    this.wakeFd = native.eventfd(0, native.EFD_NONBLOCK | native.EFD_CLOEXEC);
    const pending = new SharedArrayBuffer(4);
    this.pending = new Int32Array(pending);
    const init: ReactorInit = { index, wakeFd: this.wakeFd, pending, idleSpinUs, cpus };
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

  stats(): Promise<ReactorStats> {
    return this.request({ op: 'stats' }) as Promise<ReactorStats>;
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

  /** `cpus`: pin reactor i to cpus[i % cpus.length]; empty: no pinning. */
  constructor(native: NativeShim, count: number, idleSpinUs: number, cpus: number[] = []) {
    this.reactors = Array.from(
      { length: count },
      (_, i) => new ReactorHandle(native, i, idleSpinUs, cpus.length ? [cpus[i % cpus.length]!] : []),
    );
  }

  /** The least loaded reactor (ties: lowest index), counting the queue about to be placed. */
  pick(): ReactorHandle {
    let best = this.reactors[0]!;
    for (const r of this.reactors) if (r.load < best.load) best = r;
    best.load++;
    return best;
  }

  async shutdown(): Promise<void> {
    await Promise.all(this.reactors.map((r) => r.shutdown()));
  }
}
