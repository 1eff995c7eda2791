// VDUSE uapi layouts and ioctl numbers, checked against the _IOC encoding and
// the offsets of include/uapi/linux/vduse.h (x86_64).
import { describe, expect, test } from 'vitest';
import * as P from '../../src/frontend/vduse/proto.js';

const IOC = (dir: number, nr: number, size: number) => ((dir << 30) | (size << 16) | (0x81 << 8) | nr) >>> 0;
const W = 1;
const R = 2;

describe('VDUSE uapi', () => {
  test('ioctl numbers follow _IOC(dir, 0x81, nr, size)', () => {
    expect(P.VDUSE_GET_API_VERSION).toBe(IOC(R, 0x00, 8));
    expect(P.VDUSE_SET_API_VERSION).toBe(IOC(W, 0x01, 8));
    expect(P.VDUSE_CREATE_DEV).toBe(IOC(W, 0x02, 336));
    expect(P.VDUSE_DESTROY_DEV).toBe(IOC(W, 0x03, 256));
    expect(P.VDUSE_IOTLB_GET_FD).toBe(IOC(R | W, 0x10, 32));
    expect(P.VDUSE_DEV_GET_FEATURES).toBe(IOC(R, 0x11, 8));
    expect(P.VDUSE_DEV_SET_CONFIG).toBe(IOC(W, 0x12, 8));
    expect(P.VDUSE_DEV_INJECT_CONFIG_IRQ).toBe(IOC(0, 0x13, 0));
    expect(P.VDUSE_VQ_SETUP).toBe(IOC(W, 0x14, 32));
    expect(P.VDUSE_VQ_GET_INFO).toBe(IOC(R | W, 0x15, 48));
    expect(P.VDUSE_VQ_SETUP_KICKFD).toBe(IOC(W, 0x16, 8));
    expect(P.VDUSE_VQ_INJECT_IRQ).toBe(IOC(W, 0x17, 4));
  });

  test('vduse_dev_config: name, ids, features, queues, zero reserved words, config after 336 bytes', () => {
    const cfg = new Uint8Array(60).fill(0xcc);
    const b = P.encodeDevConfig({ name: 'vd0', deviceId: 2, features: (1n << 33n) | (1n << 32n) | 0x40n, vqNum: 2, vqAlign: 4096, config: cfg });
    const v = new DataView(b.buffer);
    expect(b.length).toBe(336 + 60);
    expect(Buffer.from(b.subarray(0, 4)).toString('latin1')).toBe('vd0\0');
    expect(v.getUint32(256, true)).toBe(0);
    expect(v.getUint32(260, true)).toBe(2);
    expect(v.getBigUint64(264, true)).toBe((1n << 33n) | (1n << 32n) | 0x40n);
    expect(v.getUint32(272, true)).toBe(2);
    expect(v.getUint32(276, true)).toBe(4096);
    expect(b.subarray(280, 332).every((x) => x === 0)).toBe(true);
    expect(v.getUint32(332, true)).toBe(60);
    expect(b[336]).toBe(0xcc);
    expect(() => P.encodeDevConfig({ name: '', deviceId: 2, features: 0n, vqNum: 1, vqAlign: 4096, config: cfg })).toThrow(/name/);
    expect(() => P.encodeDevConfig({ name: 'x'.repeat(256), deviceId: 2, features: 0n, vqNum: 1, vqAlign: 4096, config: cfg })).toThrow(/name/);
  });

  test('requests: GET_VQ_STATE, SET_STATUS, UPDATE_IOTLB; short reads are refused', () => {
    const m = new Uint8Array(152);
    const v = new DataView(m.buffer);
    v.setUint32(0, P.VDUSE_GET_VQ_STATE, true);
    v.setUint32(4, 7, true);
    v.setUint32(24, 1, true);
    expect(P.decodeRequest(m)).toEqual({ type: 0, id: 7, index: 1 });
    v.setUint32(0, P.VDUSE_SET_STATUS, true);
    m[24] = 0x0f;
    expect(P.decodeRequest(m)).toEqual({ type: 1, id: 7, status: 0x0f });
    v.setUint32(0, P.VDUSE_UPDATE_IOTLB, true);
    v.setBigUint64(24, 0n, true);
    v.setBigUint64(32, (1n << 64n) - 1n, true);
    expect(P.decodeRequest(m)).toEqual({ type: 2, id: 7, start: 0n, last: (1n << 64n) - 1n });
    expect(P.decodeRequest(m.subarray(0, 100))).toBeUndefined();
  });

  test('response: id, result, split vq state at 24/28, reserved zero', () => {
    const b = P.encodeResponse(9, P.VDUSE_REQ_RESULT_OK, { index: 1, avail: 0x1234 });
    const v = new DataView(b.buffer);
    expect(b.length).toBe(152);
    expect([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(24, true), v.getUint16(28, true)]).toEqual([9, 0, 1, 0x1234]);
    expect(b.subarray(8, 24).every((x) => x === 0)).toBe(true);
  });

  test('response: packed vq state (avail counter, avail idx, used counter, used idx at 28..35)', () => {
    const b = P.encodeResponse(5, P.VDUSE_REQ_RESULT_OK, { index: 2, packedAvail: 0x8000 | 300, packedUsed: 17 });
    const v = new DataView(b.buffer);
    expect([v.getUint32(24, true), v.getUint16(28, true), v.getUint16(30, true), v.getUint16(32, true), v.getUint16(34, true)]).toEqual([2, 1, 300, 0, 17]);
  });

  test('vq info and IOTLB entry layouts', () => {
    const info = P.vqInfoBuffer(3);
    const v = new DataView(info.buffer);
    v.setUint32(4, 256, true);
    v.setBigUint64(8, 0x1000n, true);
    v.setBigUint64(16, 0x2000n, true);
    v.setBigUint64(24, 0x3000n, true);
    v.setUint16(32, 17, true);
    info[40] = 1;
    expect(P.decodeVqInfo(info)).toMatchObject({ index: 3, num: 256, descAddr: 0x1000n, driverAddr: 0x2000n, deviceAddr: 0x3000n, availIndex: 17, ready: true });
    // The same union read as struct vduse_vq_state_packed.
    v.setUint16(32, 1, true);
    v.setUint16(34, 5, true);
    v.setUint16(36, 0, true);
    v.setUint16(38, 9, true);
    expect(P.decodeVqInfo(info)).toMatchObject({ packedAvail: 0x8000 | 5, packedUsed: 9 });
    const e = P.iotlbBuffer(0x10n, 0x20n);
    const ev = new DataView(e.buffer);
    expect([ev.getBigUint64(8, true), ev.getBigUint64(16, true)]).toEqual([0x10n, 0x20n]);
    ev.setBigUint64(0, 0x4000n, true);
    e[24] = P.VDUSE_ACCESS_RO;
    expect(P.decodeIotlb(e)).toEqual({ offset: 0x4000n, start: 0x10n, last: 0x20n, perm: 1 });
  });
});
