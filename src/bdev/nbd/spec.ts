// nbd bdev spec keys and NBD URIs (NetworkBlockDevice/nbd doc/uri.md). Errors
// name the key and say what would be right.
import { checkKeys, parseBlockSize, parseBool } from '../spec.js';

export const NBD_DEFAULT_PORT = 10809;
/** Seconds I/O waits for a lost server to come back before it fails with EIO (QEMU's reconnect-delay, but on by default). */
export const DEFAULT_RECONNECT_TIMEOUT_S = 30;
/** Seconds one connect + handshake may take, at create and on every reconnect attempt. */
export const DEFAULT_CONNECT_TIMEOUT_S = 10;
/**
 * Seconds the oldest request on a connection may wait for its reply before the
 * connection counts as lost (the Linux nbd driver's default timeout).
 */
export const DEFAULT_IO_TIMEOUT_S = 30;
export const MAX_CONNECTIONS = 16;

export const NBD_KEYS: Record<string, string> = {
  name: 'bdev name (required)',
  uri: 'nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH (or give host=/port=/path=/export=)',
  host: 'server address or name for TCP (IPv4, [IPv6] or a name such as localhost)',
  port: `TCP port (default ${NBD_DEFAULT_PORT})`,
  path: 'unix socket of the server (instead of host=)',
  export: 'export name (default: the empty name, the server default export)',
  connections: `connections per reactor, 1..${MAX_CONNECTIONS}; more than 1 only if the server offers multi-conn (default 1)`,
  readonly: 'on: open the export read-only even if the server allows writes (default off)',
  'reconnect-timeout': `seconds I/O waits while the server is unreachable (or only handshakes and then drops or ignores requests) before failing with EIO; with io-timeout set, a request fails at the latest io-timeout + reconnect-timeout after vdx first queued it for the server, however often it was retried; 0 = fail at once (default ${DEFAULT_RECONNECT_TIMEOUT_S})`,
  'connect-timeout': `seconds one connect and handshake may take (default ${DEFAULT_CONNECT_TIMEOUT_S})`,
  'io-timeout': `seconds a request may wait for a reply; then the connection is dropped and reconnected and its requests retried; a request fails with EIO once io-timeout + reconnect-timeout passed since vdx first queued it for the server, retries included; 0 = no reply deadline (a request waits for ever on a live connection; when its connection is lost it fails if reconnect-timeout has passed since it was first queued, else it is retried) (default ${DEFAULT_IO_TIMEOUT_S})`,
  'block-size': 'logical block size: 512 or 4096, at least the server minimum (default 512, or 4096 if the server needs it)',
};

export interface NbdTarget {
  /** TCP host as given (a name, or an IP literal without brackets); '' for unix */
  host: string;
  port: number;
  /** unix socket path; '' for TCP */
  path: string;
  exportName: string;
}

/** Parse nbd:// and nbd+unix:// URIs; nbds:// (TLS) is refused with a reason. */
export function parseNbdUri(uri: string): NbdTarget {
  const m = /^([a-z+]+):\/\/([^/?#]*)(\/[^?#]*)?(\?[^#]*)?$/i.exec(uri);
  if (!m) throw new Error(`nbd: uri=${uri} is not an NBD URI; use nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH`);
  const scheme = m[1]!.toLowerCase();
  const authority = m[2]!;
  const exportName = decode(uri, (m[3] ?? '/').slice(1));
  const query = new URLSearchParams((m[4] ?? '').slice(1));
  if (scheme.startsWith('nbds')) {
    throw new Error(`nbd: uri=${uri}: TLS (${scheme}://) is not supported by vdx; use nbd:// on a trusted network or nbd+unix:// on this host`);
  }
  for (const k of query.keys()) {
    if (!(scheme === 'nbd+unix' && k === 'socket')) throw new Error(`nbd: uri=${uri}: unsupported query parameter '${k}'`);
  }
  if (scheme === 'nbd+unix') {
    if (authority !== '') throw new Error(`nbd: uri=${uri}: nbd+unix:// takes no host; use nbd+unix:///EXPORT?socket=PATH`);
    const path = query.get('socket');
    if (!path) throw new Error(`nbd: uri=${uri}: nbd+unix:// needs ?socket=PATH`);
    return { host: '', port: 0, path, exportName };
  }
  if (scheme !== 'nbd' && scheme !== 'nbd+tcp') {
    throw new Error(`nbd: uri=${uri}: unknown scheme '${scheme}'; use nbd:// or nbd+unix://`);
  }
  const hp = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+))(?::(\d+))?$/.exec(authority);
  if (!hp) throw new Error(`nbd: uri=${uri}: expected HOST[:PORT] after nbd://`);
  const host = hp[1] ?? hp[2]!;
  return { host, port: hp[3] === undefined ? NBD_DEFAULT_PORT : portOf(`uri=${uri}`, hp[3]), path: '', exportName };
}

function decode(uri: string, s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new Error(`nbd: uri=${uri}: bad percent-encoding in the export name`);
  }
}

function portOf(what: string, v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65535) throw new Error(`nbd: ${what}: port must be 1..65535`);
  return Number(v);
}

function seconds(key: string, v: string | undefined, dflt: number, min: number): number {
  if (v === undefined || v === '') return dflt;
  if (!/^\d+(\.\d+)?$/.test(v) || Number(v) < min || Number(v) > 86400) {
    throw new Error(`nbd: ${key}=${v} must be a number of seconds in ${min}..86400`);
  }
  return Number(v);
}

/** The canonical URI for a target (what normalize() keeps). */
export function formatNbdUri(t: NbdTarget): string {
  const exp = encodeURIComponent(t.exportName).replace(/%2F/g, '/');
  if (t.path !== '') return `nbd+unix:///${exp}?socket=${encodeURIComponent(t.path).replace(/%2F/g, '/')}`;
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `nbd://${host}:${t.port}/${exp}`;
}

/**
 * Validate a spec; canonical form keeps uri= (from host=/port=/path=/export=
 * when those were given) so two spellings of one export compare equal.
 */
export function normalizeNbd(spec: Record<string, string>): Record<string, string> {
  checkKeys('nbd', spec, NBD_KEYS, ['name']);
  const given = (k: string) => spec[k] !== undefined && spec[k] !== '';
  let t: NbdTarget;
  if (given('uri')) {
    for (const k of ['host', 'port', 'path', 'export']) {
      if (given(k)) throw new Error(`nbd: give uri= or host=/port=/path=/export=, not both (${k}= is set)`);
    }
    t = parseNbdUri(spec.uri!);
  } else {
    if (given('host') && given('path')) throw new Error('nbd: give host= (TCP) or path= (unix socket), not both');
    if (!given('host') && !given('path')) throw new Error('nbd: missing the server: give uri=, host= (TCP) or path= (unix socket)');
    if (given('path') && given('port')) throw new Error('nbd: port= applies to host= (TCP), not to path=');
    const host = (spec.host ?? '').replace(/^\[(.*)\]$/, '$1');
    t = {
      host,
      port: given('port') ? portOf(`port=${spec.port}`, spec.port!) : given('host') ? NBD_DEFAULT_PORT : 0,
      path: spec.path ?? '',
      exportName: spec.export ?? '',
    };
  }
  if (new TextEncoder().encode(t.exportName).length > 4096) throw new Error('nbd: the export name is longer than 4096 bytes');
  if (t.path !== '' && Buffer.byteLength(t.path) > 107) throw new Error(`nbd: socket path ${t.path} is longer than 107 bytes`);
  const conns = spec.connections ?? '1';
  if (!/^\d+$/.test(conns) || Number(conns) < 1 || Number(conns) > MAX_CONNECTIONS) {
    throw new Error(`nbd: connections=${conns} must be an integer in 1..${MAX_CONNECTIONS}`);
  }
  const out: Record<string, string> = {
    name: spec.name!,
    uri: formatNbdUri(t),
    connections: String(Number(conns)),
    readonly: parseBool('readonly', spec.readonly, false) ? 'on' : 'off',
    'reconnect-timeout': String(seconds('reconnect-timeout', spec['reconnect-timeout'], DEFAULT_RECONNECT_TIMEOUT_S, 0)),
    'connect-timeout': String(seconds('connect-timeout', spec['connect-timeout'], DEFAULT_CONNECT_TIMEOUT_S, 0.1)),
    'io-timeout': String(seconds('io-timeout', spec['io-timeout'], DEFAULT_IO_TIMEOUT_S, 0)),
  };
  // block-size stays absent when not given: create() picks 512 or the server's minimum.
  if (given('block-size')) out['block-size'] = String(parseBlockSize(spec['block-size']));
  return out;
}
