// vdpa operations that make the kernel wait for the VDUSE daemon (dev add/del,
// driver bind/unbind) run on a worker thread, so the main thread stays free to
// answer /dev/vduse/$NAME while they are under way. The worker starts with the
// first of them: a restart that only re-attaches devices never needs it.
import { Worker } from 'node:worker_threads';
import type { MgmtDev, VdpaDev } from './netlink.js';
import { boundDriver, busOf, deviceExists, deviceNode, type VdpaBus } from './bus.js';

export type VdpaOp =
  | { op: 'mgmtdevs' }
  | { op: 'devices' }
  | { op: 'devNew'; name: string; mgmtdev: string }
  | { op: 'devDel'; name: string }
  | { op: 'bind'; name: string; bus: VdpaBus };

export interface VdpaState {
  name: string;
  onBus: boolean;
  driver: string | undefined;
  bus: VdpaBus | 'none';
  node: string | undefined;
}

export class VdpaOps {
  private worker: Worker | undefined;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private start(): Worker {
    const worker = new Worker(new URL('./ops-worker.js', import.meta.url), { name: 'vdpa-ops' });
    worker.on('message', (m: { seq: number; ok: boolean; result?: unknown; error?: string }) => {
      const w = this.waiting.get(m.seq);
      if (!w) return;
      this.waiting.delete(m.seq);
      if (m.ok) w.resolve(m.result);
      else w.reject(new Error(m.error));
    });
    worker.on('error', (e) => {
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    });
    // A worker that died is replaced by the next operation.
    worker.on('exit', () => {
      if (this.worker === worker) this.worker = undefined;
    });
    worker.unref();
    return worker;
  }

  private call<T>(op: VdpaOp): Promise<T> {
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      (this.worker ??= this.start()).postMessage({ seq, op });
    });
  }

  mgmtdevs(): Promise<MgmtDev[]> {
    return this.call({ op: 'mgmtdevs' });
  }
  devices(): Promise<VdpaDev[]> {
    return this.call({ op: 'devices' });
  }
  devNew(name: string, mgmtdev = 'vduse'): Promise<void> {
    return this.call({ op: 'devNew', name, mgmtdev });
  }
  devDel(name: string): Promise<void> {
    return this.call({ op: 'devDel', name });
  }
  /** Move to a bus; resolves with the new node. */
  bind(name: string, bus: VdpaBus): Promise<string> {
    return this.call({ op: 'bind', name, bus });
  }
  /** Where the device is now: sysfs reads, which never wait for the daemon, so on this thread. */
  async state(name: string): Promise<VdpaState> {
    const driver = boundDriver(name);
    return { name, onBus: deviceExists(name), driver, bus: busOf(driver), node: deviceNode(name) };
  }

  async close(): Promise<void> {
    await this.worker?.terminate();
  }
}
