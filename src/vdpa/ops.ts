// vdpa operations that make the kernel wait for the VDUSE daemon (dev add/del,
// driver bind/unbind) run on a worker thread, so the main thread stays free to
// answer /dev/vduse/$NAME while they are under way.
import { Worker } from 'node:worker_threads';
import type { MgmtDev, VdpaDev } from './netlink.js';
import type { VdpaBus } from './bus.js';

export type VdpaOp =
  | { op: 'mgmtdevs' }
  | { op: 'devices' }
  | { op: 'devNew'; name: string; mgmtdev: string }
  | { op: 'devDel'; name: string }
  | { op: 'bind'; name: string; bus: VdpaBus }
  | { op: 'state'; name: string };

export interface VdpaState {
  name: string;
  onBus: boolean;
  driver: string | undefined;
  bus: VdpaBus | 'none';
  node: string | undefined;
}

export class VdpaOps {
  private readonly worker: Worker;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor() {
    this.worker = new Worker(new URL('./ops-worker.js', import.meta.url), { name: 'vdpa-ops' });
    this.worker.on('message', (m: { seq: number; ok: boolean; result?: unknown; error?: string }) => {
      const w = this.waiting.get(m.seq);
      if (!w) return;
      this.waiting.delete(m.seq);
      if (m.ok) w.resolve(m.result);
      else w.reject(new Error(m.error));
    });
    this.worker.on('error', (e) => {
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    });
    this.worker.unref();
  }

  private call<T>(op: VdpaOp): Promise<T> {
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ seq, op });
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
  state(name: string): Promise<VdpaState> {
    return this.call({ op: 'state', name });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
