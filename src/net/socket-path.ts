// Taking a unix socket path to listen on: only a stale socket may be replaced;
// a regular file is the user's, and a socket a server still listens on is that
// server's (another export, this daemon's RPC socket, another daemon).
import { existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import { dirname } from 'node:path';

/** Does a server listen on this socket? Asked without blocking: a listener with a full backlog counts as live. */
export function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise<boolean>((res) => {
    const c = createConnection(path);
    const done = (live: boolean) => {
      clearTimeout(t);
      c.destroy();
      res(live);
    };
    // A connect that neither completes nor is refused is a live listener that is not accepting.
    const t = setTimeout(() => done(true), timeoutMs);
    c.once('connect', () => done(true));
    c.once('error', (e: NodeJS.ErrnoException) => done(e.code === 'EAGAIN'));
  });
}

/** Make `path` free to listen on, or throw saying why it is not (`what` names the option). */
export async function claimSocketPath(path: string, what: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw new Error(`${what}${path} exists and is not a socket; remove it or choose another path`);
  if (await socketAnswers(path)) throw new Error(`${what}${path} is in use: a running server listens on it; choose another path`);
  unlinkSync(path);
}
