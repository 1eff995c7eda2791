// pino: JSON lines by default; on a TTY a compact human format. Library code
// takes a Logger; only the CLI decides where logs go.
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** Formats pino's JSON lines for people: "12:00:01 INFO  vhost-user: session started socket=/run/vdx.sock". */
function prettyStream(out: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        try {
          const o = JSON.parse(line) as Record<string, unknown>;
          const { time, level, msg, pid: _pid, hostname: _h, component, ...rest } = o;
          const t = new Date(Number(time)).toISOString().slice(11, 23);
          const extra = Object.entries(rest)
            .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
            .join(' ');
          out.write(`${t} ${(LEVELS[Number(level)] ?? String(level)).padEnd(5)} ${component ? `${String(component)}: ` : ''}${String(msg ?? '')}${extra ? ` ${extra}` : ''}\n`);
        } catch {
          out.write(`${line}\n`);
        }
      }
      cb();
    },
  });
}

export function createLogger(opts: { level?: string; pretty?: boolean } = {}): Logger {
  const pretty = opts.pretty ?? process.stderr.isTTY === true;
  const level = opts.level ?? process.env.VDX_LOG_LEVEL ?? 'info';
  if (pretty) return pino({ level, base: undefined }, prettyStream(process.stderr));
  return pino({ level }, pino.destination({ fd: 2, sync: true }));
}
