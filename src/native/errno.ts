import { constants } from 'node:os';

const NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!NAMES.has(value)) NAMES.set(value, name);
}

/** 'ENOENT' for 2; 'E?123' for a number the platform does not name. */
export function errnoName(errno: number): string {
  return NAMES.get(Math.abs(errno)) ?? `E?${Math.abs(errno)}`;
}

export const E = constants.errno;
