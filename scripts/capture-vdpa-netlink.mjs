#!/usr/bin/env node
// Capture the kernel's replies to every vdpa netlink request vdx sends, as hex,
// for the codec's unit tests (test/unit/fixtures/vdpa-netlink.json). Run it as
// root on a kernel with vduse loaded, with a VDUSE device NAME that is not yet on
// the vDPA bus (e.g. vdx serve ... --export vduse:...,bus=none):
//   node scripts/capture-vdpa-netlink.mjs NAME > test/unit/fixtures/vdpa-netlink.json
import { loadNative } from '../dist/native/index.js';
import { VdpaClient } from '../dist/vdpa/client.js';

const name = process.argv[2];
if (!name) {
  process.stderr.write('usage: capture-vdpa-netlink.mjs VDUSE-DEVICE-NAME\n');
  process.exit(2);
}
const out = { kernel: (await import('node:os')).release(), device: name, replies: {} };
let current = '';
const take = (label) => {
  current = label;
  out.replies[label] = [];
};
const c = await VdpaClient.open(loadNative());
c.onReceive = (b) => out.replies[current]?.push(Buffer.from(b).toString('hex'));
const run = async (label, f) => {
  take(label);
  try {
    await f();
  } catch (e) {
    out.replies[label].push(`error: ${e.message}`);
  }
};
out.family = c.family;
await run('mgmtdev_dump', () => c.mgmtdevs());
await run('dev_new', () => c.devNew(name));
await run('dev_new_exists', () => c.devNew(name));
await run('dev_get', () => c.device(name));
await run('dev_dump', () => c.devices());
await run('dev_del', () => c.devDel(name));
await run('dev_del_missing', () => c.devDel(name));
await run('dev_new_bad_mgmtdev', () => c.devNew(name, 'nosuchmgmtdev'));
c.close();
process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
