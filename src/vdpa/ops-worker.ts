// Worker side of ops.ts: netlink requests and sysfs writes, one at a time.
import { parentPort } from 'node:worker_threads';
import { loadNative } from '../native/index.js';
import { bindBus, boundDriver, busOf, deviceExists, deviceNode } from './bus.js';
import { VdpaClient } from './client.js';
import type { VdpaOp, VdpaState } from './ops.js';

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
    case 'state': {
      const driver = boundDriver(op.name);
      const s: VdpaState = { name: op.name, onBus: deviceExists(op.name), driver, bus: busOf(driver), node: deviceNode(op.name) };
      return s;
    }
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
