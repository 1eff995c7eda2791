// Worker entry: one reactor per worker thread.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { loadBdevModule } from '../bdev/registry.js';
import { loadNative } from '../native/index.js';
import type { ReactorInit, ReactorReply, ReactorRequest } from './messages.js';
import { Reactor } from './reactor.js';

const port = parentPort!;
const init = workerData as ReactorInit;
const native = loadNative();
if (init.cpus.length > 0) {
  const rc = native.pinThread(init.cpus);
  if (rc < 0) port.postMessage({ event: 'log', level: 'warn', msg: `reactor ${init.index}: cannot pin to CPUs ${init.cpus.join(',')} (${-rc})` } satisfies ReactorReply);
}
// User bdev modules, as the main thread loaded them (it did first, so they load here too).
for (const path of init.bdevModules ?? []) await loadBdevModule(path);
const reactor = new Reactor(native, init, {
  take() {
    const m = receiveMessageOnPort(port);
    return m?.message as { seq: number; req: ReactorRequest } | undefined;
  },
  reply(r: ReactorReply) {
    port.postMessage(r);
  },
});
try {
  reactor.run();
} catch (e) {
  // One try/catch for the whole loop: report and let the main thread decide.
  port.postMessage({ event: 'log', level: 'error', msg: `reactor ${init.index} died: ${(e as Error).stack ?? e}` } satisfies ReactorReply);
  throw e;
}
