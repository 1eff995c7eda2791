// nbd bdev: an NBD client (fixed newstyle, structured replies, NBD_OPT_GO with
// block sizes). create() probes the export once from the main thread over
// node:net with the same handshake code the reactors use; each reactor's
// channel (channel.ts) then keeps its own connections.
import { lookup } from 'node:dns/promises';
import { connect as netConnect, isIP } from 'node:net';
import type { BdevDesc, BdevModule, Channel } from '../types.js';
import {
  NBD_CMD_DISC,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_REQUEST_SIZE,
  encodeRequest,
} from './codec.js';
import { NbdChannel, type NbdChannelParams } from './channel.js';
import { NbdHandshake, type NbdExportInfo } from './handshake.js';
import {
  DEFAULT_CONNECT_TIMEOUT_S,
  DEFAULT_IO_TIMEOUT_S,
  DEFAULT_RECONNECT_TIMEOUT_S,
  NBD_KEYS,
  normalizeNbd,
  parseNbdUri,
  type NbdTarget,
} from './spec.js';

/** Largest READ/WRITE sent as one NBD request, whatever the server allows. */
const MAX_IO_BYTES = 32 * 1024 * 1024;
/** Largest TRIM/WRITE_ZEROES per request (the length field is 32 bits; virtio-blk asks for at most 1 GiB). */
const MAX_RANGE_BYTES = 1 << 30;

const EIO = 5;
const ETIMEDOUT = 110;
const EHOSTUNREACH = 113;
/** How long the probe waits for the server to close after NBD_CMD_DISC before dropping the socket. */
const DISC_GRACE_MS = 500;

/** The registry reports a store's refusal as -errno (not as a bad parameter). */
function withErrno(e: Error, errno: number): Error {
  return Object.assign(e, { errno: Math.abs(errno) });
}

function where(t: NbdTarget): string {
  return t.path !== '' ? `unix socket ${t.path}` : `${t.host}:${t.port}`;
}

/**
 * Connect once, handshake, disconnect: what the server says about the export.
 * Main thread; node:net keeps the event loop free.
 */
export function probeNbd(t: NbdTarget, addr: string, timeoutMs: number): Promise<NbdExportInfo> {
  return new Promise((resolve, reject) => {
    const hs = new NbdHandshake(t.exportName);
    const sock = t.path !== '' ? netConnect({ path: t.path }) : netConnect({ host: addr, port: t.port });
    let settled = false;
    const finish = (err: Error | undefined, info?: NbdExportInfo) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) sock.destroy();
      else {
        const disc = new Uint8Array(NBD_REQUEST_SIZE);
        encodeRequest(new DataView(disc.buffer), 0, 0, NBD_CMD_DISC, 0, 0, 0, 0);
        sock.end(disc);
        // A server that ignores DISC would keep the half-closed socket for ever.
        setTimeout(() => sock.destroy(), DISC_GRACE_MS).unref();
      }
      if (err) reject(err);
      else resolve(info!);
    };
    const timer = setTimeout(
      () => finish(withErrno(new Error(`nbd: no NBD handshake from ${where(t)} within ${timeoutMs / 1000} s (connect-timeout)`), ETIMEDOUT)),
      timeoutMs,
    );
    const pump = () => {
      for (let out = hs.takeOutput(); out !== undefined; out = hs.takeOutput()) sock.write(out);
      if (hs.state === 'failed') finish(withErrno(new Error(`nbd: ${where(t)} export '${t.exportName}': ${hs.error}`), EIO));
      else if (hs.state === 'done') finish(undefined, hs.result);
    };
    sock.on('data', (d: Buffer) => {
      hs.push(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      pump();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish(withErrno(new Error(`nbd: cannot connect to ${where(t)}: ${e.message}`), e.errno ?? EIO)));
    sock.on('close', () => finish(withErrno(new Error(`nbd: ${where(t)} closed the connection during the handshake (no export '${t.exportName}'?)`), EIO)));
  });
}

/** The parameters a channel runs with, and the info the frontends see, from a probe. */
export function planNbd(spec: Record<string, string>, t: NbdTarget, addr: string, info: NbdExportInfo): BdevDesc {
  const flags = info.flags;
  const min = info.minBlock;
  if (min > 4096) throw new Error(`nbd: the server's minimum block size is ${min}; vdx supports at most 4096`);
  let blockSize: number;
  if (spec['block-size'] !== undefined) {
    blockSize = Number(spec['block-size']);
    if (blockSize < min) throw new Error(`nbd: block-size=${blockSize} is below the server's minimum block size ${min}; use block-size=4096`);
  } else blockSize = min <= 512 ? 512 : 4096;
  const maxIoBytes = Math.floor(Math.min(info.maxPayload, MAX_IO_BYTES) / blockSize) * blockSize;
  if (maxIoBytes < blockSize) throw new Error(`nbd: the server's maximum payload ${info.maxPayload} is below one ${blockSize}-byte block`);
  if (info.sizeBytes < blockSize) throw new Error(`nbd: export '${t.exportName}' (${info.sizeBytes} bytes) is smaller than one ${blockSize}-byte block`);
  const readonly = spec.readonly === 'on' || (flags & NBD_FLAG_READ_ONLY) !== 0;
  const asked = Number(spec.connections ?? '1');
  const connections = (flags & NBD_FLAG_CAN_MULTI_CONN) !== 0 ? asked : 1;
  const params: NbdChannelParams & Record<string, string | number | boolean> = {
    bdevName: spec.name!,
    uri: spec.uri!,
    transport: t.path !== '' ? 'unix' : 'tcp',
    addr: t.path !== '' ? t.path : addr,
    port: t.port,
    exportName: t.exportName,
    connections,
    serverSizeBytes: info.sizeBytes,
    serverFlags: flags,
    readonly,
    maxIoBytes,
    maxRangeBytes: MAX_RANGE_BYTES - (MAX_RANGE_BYTES % blockSize),
    blockSize,
    reconnectTimeoutMs: Number(spec['reconnect-timeout'] ?? DEFAULT_RECONNECT_TIMEOUT_S) * 1000,
    connectTimeoutMs: Number(spec['connect-timeout'] ?? DEFAULT_CONNECT_TIMEOUT_S) * 1000,
    ioTimeoutMs: Number(spec['io-timeout'] ?? DEFAULT_IO_TIMEOUT_S) * 1000,
  };
  return {
    info: {
      name: spec.name!,
      type: 'nbd',
      blockSize,
      // A trailing partial block is not addressable.
      sizeBytes: info.sizeBytes - (info.sizeBytes % blockSize),
      readonly,
      caps: {
        flush: (flags & NBD_FLAG_SEND_FLUSH) !== 0,
        discard: !readonly && (flags & NBD_FLAG_SEND_TRIM) !== 0,
        writeZeroes: !readonly && (flags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0,
      },
      maxDiscardBytes: params.maxRangeBytes,
      // Without multi-conn a FLUSH covers only its own connection's writes: keep every queue on one reactor.
      singleReactor: (flags & NBD_FLAG_CAN_MULTI_CONN) === 0,
    },
    params: {
      ...params,
      connectionsAsked: asked,
      structured: info.structured,
      minBlock: info.minBlock,
      preferredBlock: info.preferredBlock,
      maxPayload: info.maxPayload,
      exportNameFallback: info.exportNameFallback,
    },
  };
}

/** TCP names are resolved here, on the main thread: a reactor's connect must not block on DNS. */
async function resolveHost(t: NbdTarget): Promise<string> {
  if (t.path !== '' || isIP(t.host) !== 0) return t.host;
  try {
    return (await lookup(t.host)).address;
  } catch (e) {
    // getaddrinfo failures carry libuv's EAI_* codes, not errnos: report EHOSTUNREACH then.
    const errno = Math.abs((e as NodeJS.ErrnoException).errno ?? 0);
    throw withErrno(new Error(`nbd: cannot resolve host ${t.host}: ${(e as Error).message}`), errno >= 1 && errno <= 133 ? errno : EHOSTUNREACH);
  }
}

export const nbdBdev: BdevModule = {
  type: 'nbd',
  keys: NBD_KEYS,
  normalize: normalizeNbd,
  async create(spec): Promise<BdevDesc> {
    const t = parseNbdUri(spec.uri!);
    const addr = await resolveHost(t);
    const info = await probeNbd(t, addr, Number(spec['connect-timeout'] ?? DEFAULT_CONNECT_TIMEOUT_S) * 1000);
    return planNbd(spec, t, addr, info);
  },
  open(desc, ctx): Channel {
    return new NbdChannel(desc.params as unknown as NbdChannelParams, ctx);
  },
  describe: (desc) => {
    const p = desc.params;
    return {
      productName: 'NBD disk',
      driverSpecific: {
        nbd: {
          uri: p.uri,
          export: p.exportName,
          connections: p.connections,
          connections_requested: p.connectionsAsked,
          server_flags: p.serverFlags,
          structured_replies: p.structured,
          min_block: p.minBlock,
          preferred_block: p.preferredBlock,
          max_payload: p.maxPayload,
          reconnect_timeout: (p.reconnectTimeoutMs as number) / 1000,
          connect_timeout: (p.connectTimeoutMs as number) / 1000,
          io_timeout: (p.ioTimeoutMs as number) / 1000,
          readonly: desc.info.readonly,
        },
      },
    };
  },
  destroy(): void {},
};
