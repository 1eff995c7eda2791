// A refused control-plane operation, with the code a caller sees: a negative
// errno, as SPDK's RPC handlers report them (-19 "No such device" for a missing
// bdev, -16 for one in use, -17 for a name taken with other parameters).

export const ENOENT = -2;
export const EBUSY = -16;
export const EEXIST = -17;
export const ENODEV = -19;
export const EINVAL = -22;

export class ControlError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}
