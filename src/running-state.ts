// What RPC calls made of a running vdx, kept in the state directory so that a
// vdx that died (SIGKILL, a crash) or stopped for an upgrade comes back with
// the bdevs and exports it had, not only those of its command line. It is
// the save_config document, rewritten (by rename, 0600) after each RPC call
// that changed it, before the caller hears of its success; the ordinary stop
// removes it. One file per RPC socket: two daemons never share one.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { checkSavedConfig, isSavedConfig, type SavedConfig } from './config/saved.js';
import { writePrivateFile } from './frontend/vduse/state.js';

export class RunningState {
  readonly path: string;
  private last = '';

  constructor(
    readonly dir: string,
    rpcSocket: string,
  ) {
    this.path = join(dir, `running-${rpcSocket.replace(/^\/+/, '').replace(/[^A-Za-z0-9._-]+/g, '-')}.json`);
  }

  /** The document a previous vdx on this socket left, or undefined; throws naming the file when it is not one. */
  load(): SavedConfig | undefined {
    if (!existsSync(this.path)) return undefined;
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(this.path, 'utf8'));
    } catch (e) {
      throw new Error(`${this.path}: not JSON (${(e as Error).message}); remove it to start from the command line alone`);
    }
    if (!isSavedConfig(doc)) throw new Error(`${this.path}: not a saved configuration; remove it to start from the command line alone`);
    checkSavedConfig(this.path, doc);
    return doc;
  }

  /** Write `doc` unless it is what the file already holds. */
  save(doc: SavedConfig): void {
    const text = `${JSON.stringify(doc, null, 1)}\n`;
    if (text === this.last) return;
    writePrivateFile(this.dir, this.path, text);
    this.last = text;
  }

  remove(): void {
    rmSync(this.path, { force: true });
    this.last = '';
  }
}
