// Worker side of ops.ts: netlink requests and sysfs writes, one at a time.
import { parentPort } from 'node:worker_threads';
import { loadNative } from '../native/index.js';
import { bindBus } from './bus.js';
import { VdpaClient } from './client.js';
import type { VdpaOp } from './ops.js';

const port = parentPort!;
const native = loadNative();
let client: VdpaClient | undefined;
let chain: Promise<void> = Promise.resolve();

async function nl(): Promise<VdpaClient> {
  client ??= await VdpaClient.open(native);
  return client;
}

async function run(op: VdpaOp): Promise<unknown> {
  switch (op.op) {
    case 'mgmtdevs':
      return (await nl()).mgmtdevs();
    case 'devices':
      return (await nl()).devices();
    case 'devNew':
      return (await nl()).devNew(op.name, op.mgmtdev);
    case 'devDel':
      return (await nl()).devDel(op.name);
    case 'bind':
      return bindBus(op.name, op.bus);
  }
}

port.on('message', (m: { seq: number; op: VdpaOp }) => {
  chain = chain.then(async () => {
    try {
      port.postMessage({ seq: m.seq, ok: true, result: await run(m.op) });
    } catch (e) {
      port.postMessage({ seq: m.seq, ok: false, error: (e as Error).message });
    }
  });
});
