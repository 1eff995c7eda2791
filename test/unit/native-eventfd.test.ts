import { describe, expect, test } from 'vitest';
import { E, VdxError, errnoName, loadNative } from '../../src/native/index.js';

describe('native shim: eventfd', () => {
  const n = loadNative();

  test('counts writes and reads them back once', () => {
    const fd = n.eventfd(0, n.EFD_NONBLOCK | n.EFD_CLOEXEC);
    try {
      expect(n.eventfdRead(fd)).toBe(-E.EAGAIN);
      expect(n.eventfdWrite(fd, 3)).toBe(0);
      expect(n.eventfdWrite(fd, 4)).toBe(0);
      expect(n.eventfdRead(fd)).toBe(7);
      expect(n.eventfdRead(fd)).toBe(-E.EAGAIN);
    } finally {
      expect(n.close(fd)).toBe(0);
    }
  });

  test('hot-path calls return -errno on a closed fd instead of throwing', () => {
    const fd = n.eventfd(0, n.EFD_NONBLOCK);
    n.close(fd);
    expect(n.eventfdRead(fd)).toBe(-E.EBADF);
    expect(n.eventfdWrite(fd, 1)).toBe(-E.EBADF);
    expect(n.close(fd)).toBe(-E.EBADF);
  });

  test('slow-path failures throw VdxError with errno and syscall', () => {
    let err: unknown;
    try {
      n.eventfd(0, 0x7fff_ffff); // no such flags
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VdxError);
    expect((err as VdxError).code).toBe('EINVAL');
    expect((err as VdxError).syscall).toBe('eventfd');
  });

  test('wrong argument types are TypeErrors, not crashes', () => {
    expect(() => (n.eventfdWrite as (a: unknown, b: unknown) => number)('x', 1)).toThrow(TypeError);
  });

  test('errnoName names known and unknown numbers', () => {
    expect(errnoName(-E.ENOENT)).toBe('ENOENT');
    expect(errnoName(99999)).toBe('E?99999');
  });
});
