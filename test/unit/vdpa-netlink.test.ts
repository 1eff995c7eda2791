// The vdpa netlink codec against replies captured from the 6.12 kernel in the
// bench guest (scripts/capture-vdpa-netlink.mjs; test/unit/fixtures/vdpa-netlink.json).
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  NLMSG_DONE,
  NLMSG_ERROR,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  VDPA_ATTR_DEV_NAME,
  VDPA_ATTR_MGMTDEV_DEV_NAME,
  VDPA_CMD_DEV_DEL,
  VDPA_CMD_DEV_NEW,
  VDPA_CMD_MGMTDEV_GET,
  decodeError,
  decodeMessages,
  encodeGenl,
  parseDev,
  parseMgmtDev,
  strAttr,
} from '../../src/vdpa/netlink.js';

const fx = JSON.parse(readFileSync(new URL('./fixtures/vdpa-netlink.json', import.meta.url), 'utf8')) as {
  kernel: string;
  family: number;
  replies: Record<string, string[]>;
};
const reply = (label: string, i = 0) => decodeMessages(Uint8Array.from(Buffer.from(fx.replies[label]![i]!, 'hex'))).msgs;

describe('vdpa netlink: requests, byte for byte', () => {
  test('DEV_NEW is the 44-byte message iproute2 sends (MGMTDEV_DEV_NAME, then DEV_NAME)', () => {
    const b = encodeGenl(0x23, VDPA_CMD_DEV_NEW, 1, NLM_F_REQUEST | NLM_F_ACK, 0x6b04faf9, [strAttr(VDPA_ATTR_MGMTDEV_DEV_NAME, 'vduse'), strAttr(VDPA_ATTR_DEV_NAME, 'cap0')]);
    expect(Buffer.from(b).toString('hex')).toBe(
      ['2c000000', '2300', '0500', 'f9fa046b', '00000000', '03', '01', '0000', '0a00', '0200', '7664757365', '00', '0000', '0900', '0400', '63617030', '00', '000000'].join(''),
    );
    // The kernel echoed this very header back in its ACK.
    const ack = reply('dev_new')[0]!;
    expect(Buffer.from(ack.payload.subarray(4, 20)).toString('hex')).toBe(Buffer.from(b.subarray(0, 16)).toString('hex'));
  });

  test('DEV_DEL and a MGMTDEV_GET dump', () => {
    const del = encodeGenl(35, VDPA_CMD_DEV_DEL, 1, NLM_F_REQUEST | NLM_F_ACK, 1, [strAttr(VDPA_ATTR_DEV_NAME, 'cap0')]);
    expect(del.length).toBe(32);
    expect(Buffer.from(del.subarray(16)).toString('hex')).toBe('040100000900040063617030' + '00000000');
    const dump = encodeGenl(35, VDPA_CMD_MGMTDEV_GET, 1, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, 2, []);
    expect(Buffer.from(dump).toString('hex')).toBe('140000002300050302000000000000000201' + '0000');
  });
});

describe(`vdpa netlink: kernel replies (Linux ${fx.kernel})`, () => {
  test('MGMTDEV_GET dump: vduse offers net and block, then DONE', () => {
    const [m] = reply('mgmtdev_dump', 0);
    expect(parseMgmtDev(m!.payload)).toEqual({ name: 'vduse', supportedClasses: 0x6n, maxVqs: 0 });
    expect(reply('mgmtdev_dump', 1)[0]!.type).toBe(NLMSG_DONE);
  });

  test('DEV_GET: the VDUSE block device with one queue of up to 1024 entries', () => {
    const [m] = reply('dev_get', 0);
    expect(m!.type).toBe(fx.family);
    expect(parseDev(m!.payload)).toEqual({ name: 'cap0', mgmtdev: 'vduse', deviceId: 2, vendorId: 0, maxVqs: 1, maxVqSize: 1024, minVqSize: 1 });
    const [ack] = reply('dev_get', 1);
    expect(ack!.type).toBe(NLMSG_ERROR);
    expect(decodeError(ack!)).toEqual({ errno: 0 });
  });

  test('errors: EEXIST without a message, ENODEV with the extended ACK text', () => {
    expect(decodeError(reply('dev_new_exists')[0]!)).toEqual({ errno: 17 });
    expect(decodeError(reply('dev_del_missing')[0]!)).toEqual({ errno: 19, message: 'vdpa: device not found' });
    expect(decodeError(reply('dev_new_bad_mgmtdev')[0]!)).toEqual({ errno: 19, message: 'vdpa: Fail to find the specified management device' });
  });

  test('truncated or lying lengths are reported, not trusted', () => {
    const good = Buffer.from(fx.replies.dev_get![0]!, 'hex');
    const bad = Uint8Array.from(good);
    new DataView(bad.buffer).setUint32(0, 0x1000, true);
    expect(decodeMessages(bad).error).toMatch(/length 4096 at offset 0 is invalid/);
    expect(decodeMessages(bad.subarray(0, 10)).msgs).toEqual([]);
    // an attribute claiming more than its message holds ends the walk
    const m = decodeMessages(Uint8Array.from(good)).msgs[0]!;
    const p = Uint8Array.from(m.payload);
    new DataView(p.buffer).setUint16(4, 0xff, true);
    expect(parseDev(p).name).toBe('');
  });
});
