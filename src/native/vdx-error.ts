import { errnoName } from './errno.js';

/** A failed syscall on the slow path (setup, ioctl, mmap). The hot path returns -errno instead. */
export class VdxError extends Error {
  constructor(
    readonly errno: number,
    readonly syscall: string,
    detail?: string,
  ) {
    super(`${syscall}: ${errnoName(errno)}${detail ? ` (${detail})` : ''}`);
    this.name = 'VdxError';
  }

  get code(): string {
    return errnoName(this.errno);
  }
}
