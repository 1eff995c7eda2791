// The shim's syscall families against the real kernel (no guest needed).
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { E, VdxError, loadNative } from '../../src/native/index.js';
import { GuestMemory, WINDOW_BYTES } from '../../src/virtio/memory.js';

const n = loadNative();

describe('native shim', () => {
  test('unix socket pair passes bytes and fds (SCM_RIGHTS)', () => {
    const [a, b] = n.socketPair();
    const efd = n.eventfd(5, n.EFD_NONBLOCK);
    const msg = new Uint8Array([1, 2, 3, 4]);
    expect(n.sendMsg(a, msg, 0, 4, [efd])).toBe(4);
    const rx = new Uint8Array(16);
    const fds = new Int32Array(4);
    expect(n.recvMsg(b, rx, 0, 16, fds)).toBe(4);
    expect(Array.from(rx.subarray(0, 4))).toEqual([1, 2, 3, 4]);
    expect(fds[0]).toBe(1);
    const passed = fds[1]!;
    expect(passed).not.toBe(efd);
    expect(n.eventfdRead(passed)).toBe(5); // same eventfd, new descriptor
    expect(n.recvMsg(b, rx, 0, 16, fds)).toBe(-E.EAGAIN);
    for (const fd of [a, b, efd, passed]) n.close(fd);
  });

  test('fds beyond the receiver room are closed, and counted', () => {
    const [a, b] = n.socketPair();
    const sent = [n.eventfd(0, 0), n.eventfd(0, 0), n.eventfd(0, 0)];
    n.sendMsg(a, new Uint8Array(1), 0, 1, sent);
    const fds = new Int32Array(2); // room for one
    expect(n.recvMsg(b, new Uint8Array(1), 0, 1, fds)).toBe(1);
    expect(fds[0]).toBe(3);
    n.close(fds[1]!);
    for (const fd of [a, b, ...sent]) n.close(fd);
  });

  test('listen/connect/accept on a path', () => {
    const path = join(tmpdir(), `vdx-sock-${process.pid}`);
    rmSync(path, { force: true });
    const l = n.unixListen(path, 1);
    expect(n.accept(l)).toBe(-E.EAGAIN);
    const c = n.unixConnect(path);
    const s = n.accept(l);
    expect(s).toBeGreaterThan(0);
    expect(n.sendMsg(c, new Uint8Array([9]), 0, 1, [])).toBe(1);
    const rx = new Uint8Array(1);
    expect(n.recvMsg(s, rx, 0, 1, new Int32Array(1))).toBe(1);
    expect(rx[0]).toBe(9);
    for (const fd of [l, c, s]) n.close(fd);
    rmSync(path);
    expect(() => n.unixConnect(path)).toThrow(VdxError);
  });

  test('munmap detaches the buffer so stale views read as empty instead of faulting', () => {
    const m = n.mmap(-1, 0, 8192, n.PROT_READ | n.PROT_WRITE, n.MAP_PRIVATE | n.MAP_ANONYMOUS);
    const u8 = new Uint8Array(m.buffer);
    u8[100] = 7;
    const view = new Uint8Array(n.viewAddress(m.addr, 8192));
    expect(view[100]).toBe(7); // the same memory, seen through a second buffer
    n.detach(view.buffer);
    expect(view.length).toBe(0);
    expect(n.munmap(m.buffer, m.addr, 8192)).toBe(0);
    expect(u8.length).toBe(0);
    expect(u8[100]).toBeUndefined();
  });

  test('memfd + mmap share pages between mappings; memcpy/memset move bytes', () => {
    const fd = n.memfdCreate('t', n.MFD_CLOEXEC);
    n.ftruncate(fd, 4096);
    const a = n.mmap(fd, 0, 4096, n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED);
    const b = n.mmap(fd, 0, 4096, n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED);
    n.memset(a.addr, 0xee, 16);
    expect(new Uint8Array(b.buffer)[15]).toBe(0xee);
    n.memcpy(b.addr + 100, a.addr, 4);
    expect(Array.from(new Uint8Array(a.buffer, 100, 4))).toEqual([0xee, 0xee, 0xee, 0xee]);
    n.munmap(a.buffer, a.addr, 4096);
    n.munmap(b.buffer, b.addr, 4096);
    n.close(fd);
  });

  test('guest memory beyond one TypedArray is cut into windows', () => {
    const len = 2 * WINDOW_BYTES + 4096; // 2 GiB + a page, reserved but never touched
    const m = n.mmap(-1, 0, len, n.PROT_READ | n.PROT_WRITE, n.MAP_PRIVATE | n.MAP_ANONYMOUS);
    const mem = new GuestMemory([{ gpa: 0x1_0000_0000, uva: -1, hostAddr: m.addr, lenBytes: len }], (addr, l) => n.viewAddress(addr, l));
    expect(mem.windows.map((w) => w.lenBytes)).toEqual([WINDOW_BYTES, WINDOW_BYTES, 4096]);
    const segs = new Float64Array(16);
    // 8 KiB straddling the first window boundary: two segments, one per window
    expect(mem.mapGpa(0x1_0000_0000 + WINDOW_BYTES - 4096, 8192, 1, segs, 0, 4)).toBe(2);
    expect(Array.from(segs.subarray(0, 8))).toEqual([0, WINDOW_BYTES - 4096, 4096, 1, 1, 0, 4096, 1]);
    mem.windows[1]!.u8[0] = 0x42;
    expect(new Uint8Array(n.viewAddress(m.addr + WINDOW_BYTES, 1))[0]).toBe(0x42);
    expect(mem.mapGpa(0x1_0000_0000 + len - 10, 20, 0, segs, 0, 4)).toBe(-E.EFAULT);
    for (const w of mem.windows) n.detach(w.buffer);
    n.munmap(m.buffer, m.addr, len);
  });
});

describe('io_uring and the file bdev', () => {
  test('file bdev: write, read, flush, punch hole and zero range through io_uring', async () => {
    const { fileBdev } = await import('../../src/bdev/file.js');
    const { BdevIo, IoOp } = await import('../../src/bdev/types.js');
    const path = join(tmpdir(), `vdx-file-${process.pid}.img`);
    writeFileSync(path, Buffer.alloc(1 << 20, 0x11));
    const desc = fileBdev.create(fileBdev.normalize({ name: 'f', path }));
    expect(desc.info.sizeBytes).toBe(1 << 20);
    const ch = fileBdev.open(desc, { log: () => {} });
    const buf = n.mmap(-1, 0, 65536, n.PROT_READ | n.PROT_WRITE, n.MAP_PRIVATE | n.MAP_ANONYMOUS);
    const u8 = new Uint8Array(buf.buffer);
    const run = async (setup: (io: InstanceType<typeof BdevIo>) => void) => {
      const io = new BdevIo();
      let done = 0;
      io.done = () => done++;
      setup(io);
      expect(ch.submit(io)).toBe(0);
      expect(done).toBe(0); // never inside submit
      for (let i = 0; i < 200 && done === 0; i++) {
        ch.poll();
        if (done === 0) await new Promise((r) => setTimeout(r, 1));
      }
      expect(done).toBe(1);
      return io.status;
    };
    u8.fill(0xab, 0, 8192);
    const write = (io: InstanceType<typeof BdevIo>) => {
      Object.assign(io, { op: IoOp.WRITE, offsetBytes: 4096, lenBytes: 8192, niov: 2 });
      io.iov.set([buf.addr, 4096, buf.addr + 4096, 4096]);
    };
    const read = (io: InstanceType<typeof BdevIo>) => {
      Object.assign(io, { op: IoOp.READ, offsetBytes: 0, lenBytes: 16384, niov: 1 });
      io.iov.set([buf.addr + 16384, 16384]);
    };
    expect(await run(write)).toBe(0);
    expect(await run((io) => Object.assign(io, { op: IoOp.FLUSH }))).toBe(0);
    expect(await run(read)).toBe(0);
    expect([u8[16384], u8[16384 + 4096], u8[16384 + 12287], u8[16384 + 12288]]).toEqual([0x11, 0xab, 0xab, 0x11]);
    expect(await run((io) => Object.assign(io, { op: IoOp.DISCARD, offsetBytes: 65536, lenBytes: 65536 }))).toBe(0);
    expect(await run((io) => Object.assign(io, { op: IoOp.WRITE_ZEROES, offsetBytes: 4096, lenBytes: 4096, unmap: false }))).toBe(0);
    ch.close();
    const data = readFileSync(path);
    expect(data.subarray(65536, 131072).every((x) => x === 0)).toBe(true);
    expect(data.subarray(4096, 8192).every((x) => x === 0)).toBe(true);
    expect(data[8192]).toBe(0xab);
    expect(statSync(path).blocks * 512).toBeLessThan(1 << 20); // the hole is real
    n.munmap(buf.buffer, buf.addr, 65536);
    rmSync(path);
  });

  test('file bdev: clear errors for a missing path and bad keys', async () => {
    const { fileBdev } = await import('../../src/bdev/file.js');
    expect(() => fileBdev.create(fileBdev.normalize({ name: 'f', path: '/nonexistent/x.img' }))).toThrow(/cannot open path=\/nonexistent\/x.img/);
    expect(() => fileBdev.create(fileBdev.normalize({ name: 'f', path: '/dev/null', dirct: 'on' }))).toThrow(/unknown key 'dirct'; known keys: name, path, direct/);
  });
});

describe('malloc bdev', () => {
  /** AnonHugePages (kB) of the mapping that starts at `addr`, from /proc/self/smaps. */
  const anonHugeKb = (addr: number): number => {
    const smaps = readFileSync('/proc/self/smaps', 'utf8');
    const at = smaps.indexOf(`${addr.toString(16)}-`);
    if (at < 0) return -1;
    return Number(/AnonHugePages:\s+(\d+)/.exec(smaps.slice(at))![1]);
  };

  test('channels share one disk; discard and write-zeroes read back as zeroes; populate=on gets huge pages where THP allows', async () => {
    const { mallocBdev } = await import('../../src/bdev/malloc.js');
    const { BdevIo, IoOp } = await import('../../src/bdev/types.js');
    const size = 8 << 20;
    const desc = mallocBdev.create(mallocBdev.normalize({ name: 'm', size: '8M', populate: 'on' }));
    const thpKnob = '/sys/kernel/mm/transparent_hugepage/enabled';
    const thp = existsSync(thpKnob) ? readFileSync(thpKnob, 'utf8') : '[never]';
    if (!thp.includes('[never]')) {
      expect(desc.params.hugePages).toBe(true);
      expect(anonHugeKb(desc.params.addr as number)).toBeGreaterThanOrEqual(2048);
    }
    const a = mallocBdev.open(desc, { log: () => {} });
    const b = mallocBdev.open(desc, { log: () => {} }); // a second reactor's channel
    const buf = n.mmap(-1, 0, 65536, n.PROT_READ | n.PROT_WRITE, n.MAP_PRIVATE | n.MAP_ANONYMOUS);
    const u8 = new Uint8Array(buf.buffer);
    const run = (ch: typeof a, setup: (io: InstanceType<typeof BdevIo>) => void): number => {
      const io = new BdevIo();
      let done = 0;
      io.done = () => done++;
      setup(io);
      const rc = ch.submit(io);
      if (rc < 0) return rc;
      expect(done).toBe(0); // never inside submit
      ch.poll();
      expect(done).toBe(1);
      return io.status;
    };
    const rw = (op: number, off: number, len: number, at: number) => (io: InstanceType<typeof BdevIo>) => {
      Object.assign(io, { op, offsetBytes: off, lenBytes: len, niov: 1 });
      io.iov.set([buf.addr + at, len]);
    };
    u8.fill(0xcd, 0, 32768);
    expect(run(a, rw(IoOp.WRITE, size - 32768, 32768, 0))).toBe(0);
    expect(run(b, rw(IoOp.READ, size - 32768, 32768, 32768))).toBe(0);
    expect(u8.subarray(32768).every((x) => x === 0xcd)).toBe(true);
    // Discard releases whole pages; the partial page around them is zeroed.
    expect(run(a, (io) => Object.assign(io, { op: IoOp.DISCARD, offsetBytes: size - 30000, lenBytes: 20000 }))).toBe(0);
    expect(run(a, (io) => Object.assign(io, { op: IoOp.WRITE_ZEROES, offsetBytes: size - 512, lenBytes: 512, unmap: false }))).toBe(0);
    expect(run(b, rw(IoOp.READ, size - 32768, 32768, 32768))).toBe(0);
    const back = u8.subarray(32768);
    expect(back.subarray(0, 2768).every((x) => x === 0xcd)).toBe(true);
    expect(back.subarray(2768, 22768).every((x) => x === 0)).toBe(true);
    expect(back.subarray(22768, 32768 - 512).every((x) => x === 0xcd)).toBe(true);
    expect(back.subarray(32768 - 512).every((x) => x === 0)).toBe(true);
    expect(run(a, rw(IoOp.READ, size - 4096, 8192, 0))).toBe(-22); // past the end
    a.close();
    b.close();
    mallocBdev.destroy(desc);
    n.munmap(buf.buffer, buf.addr, 65536);
  });
});
