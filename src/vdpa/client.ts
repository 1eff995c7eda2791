// vdpa management over generic netlink, with no dependency on iproute2:
// resolve the family, list management devices, create, delete and query devices.
import type { FdWatcher, NativeShim } from '../native/index.js';
import { E, errnoName } from '../native/index.js';
import {
  type Attr,
  CTRL_ATTR_FAMILY_ID,
  CTRL_ATTR_FAMILY_NAME,
  CTRL_CMD_GETFAMILY,
  GENL_ID_CTRL,
  type MgmtDev,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  type NlMsg,
  VDPA_ATTR_DEV_NAME,
  VDPA_ATTR_MGMTDEV_DEV_NAME,
  VDPA_CMD_DEV_DEL,
  VDPA_CMD_DEV_GET,
  VDPA_CMD_DEV_NEW,
  VDPA_CMD_MGMTDEV_GET,
  VDPA_GENL_NAME,
  VDPA_GENL_VERSION,
  type VdpaDev,
  attrU16,
  decodeError,
  decodeGenl,
  decodeMessages,
  encodeGenl,
  parseDev,
  parseMgmtDev,
  strAttr,
} from './netlink.js';

export class NetlinkError extends Error {
  constructor(
    readonly what: string,
    readonly errno: number,
    readonly extack?: string,
  ) {
    super(`${what}: ${errnoName(errno)}${extack ? ` (${extack})` : ''}`);
    this.name = 'NetlinkError';
  }
}

export const VDPA_MODULE_HINT =
  'load the vduse and vdpa modules (modprobe vduse vdpa virtio_vdpa vhost_vdpa); needs Linux >= 5.15, driver_override >= 5.17';

export class VdpaClient {
  private seq = Math.floor(Date.now() / 1000) & 0x7fffffff;
  private readonly rx = new Uint8Array(65536);
  private readonly noFds = new Int32Array(1);
  private readonly watcher: FdWatcher;
  /** Every datagram received, for tests that capture kernel replies. */
  onReceive: ((bytes: Uint8Array) => void) | undefined;

  private constructor(
    private readonly native: NativeShim,
    private readonly fd: number,
    readonly family: number,
  ) {
    this.watcher = new native.FdWatcher(fd);
  }

  /** Open a socket and resolve the vdpa family; a missing family is a clear error. */
  static async open(native: NativeShim, timeoutMs = 5000): Promise<VdpaClient> {
    const fd = native.netlinkOpen(native.NETLINK_GENERIC);
    const boot = new VdpaClient(native, fd, GENL_ID_CTRL);
    try {
      const r = await boot.transact('resolve the vdpa generic netlink family', GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, [strAttr(CTRL_ATTR_FAMILY_NAME, VDPA_GENL_NAME)], false, timeoutMs);
      const id = attrU16(decodeGenl(r[0]!.payload).attrs.get(CTRL_ATTR_FAMILY_ID));
      if (id === undefined) throw new Error('the kernel did not return a family id for vdpa');
      boot.watcher.close();
      return new VdpaClient(native, fd, id);
    } catch (e) {
      boot.watcher.close();
      native.close(fd);
      if (e instanceof NetlinkError && e.errno === E.ENOENT) {
        throw new Error(`no vdpa generic netlink family: ${VDPA_MODULE_HINT}`);
      }
      throw e;
    }
  }

  async mgmtdevs(): Promise<MgmtDev[]> {
    const r = await this.transact('list vdpa management devices', this.family, VDPA_CMD_MGMTDEV_GET, VDPA_GENL_VERSION, [], true);
    return r.map((m) => parseMgmtDev(m.payload));
  }

  async devices(): Promise<VdpaDev[]> {
    const r = await this.transact('list vdpa devices', this.family, VDPA_CMD_DEV_GET, VDPA_GENL_VERSION, [], true);
    return r.map((m) => parseDev(m.payload));
  }

  async device(name: string): Promise<VdpaDev> {
    const r = await this.transact(`get vdpa device ${name}`, this.family, VDPA_CMD_DEV_GET, VDPA_GENL_VERSION, [strAttr(VDPA_ATTR_DEV_NAME, name)], false);
    return parseDev(r[0]!.payload);
  }

  /** `vdpa dev add name NAME mgmtdev MGMTDEV`; VDUSE's mgmtdev has no bus, so none is sent. */
  async devNew(name: string, mgmtdev = 'vduse'): Promise<void> {
    await this.transact(`vdpa dev add ${name} (mgmtdev ${mgmtdev})`, this.family, VDPA_CMD_DEV_NEW, VDPA_GENL_VERSION, [
      strAttr(VDPA_ATTR_MGMTDEV_DEV_NAME, mgmtdev),
      strAttr(VDPA_ATTR_DEV_NAME, name),
    ], false);
  }

  async devDel(name: string): Promise<void> {
    await this.transact(`vdpa dev del ${name}`, this.family, VDPA_CMD_DEV_DEL, VDPA_GENL_VERSION, [strAttr(VDPA_ATTR_DEV_NAME, name)], false);
  }

  /** Send one request and collect its replies (one, or a dump) until the ACK / DONE. */
  private async transact(what: string, family: number, cmd: number, version: number, attrs: Attr[], dump: boolean, timeoutMs = 5000): Promise<NlMsg[]> {
    const seq = ++this.seq;
    const req = encodeGenl(family, cmd, version, NLM_F_REQUEST | NLM_F_ACK | (dump ? NLM_F_DUMP : 0), seq, attrs);
    const rc = this.native.sendMsg(this.fd, req, 0, req.length, []);
    if (rc < 0) throw new NetlinkError(what, -rc);
    const out: NlMsg[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const n = this.native.recvMsg(this.fd, this.rx, 0, this.rx.length, this.noFds);
      if (n === -E.EAGAIN) {
        if (Date.now() > deadline) throw new NetlinkError(what, E.ETIMEDOUT);
        await this.readable(deadline - Date.now());
        continue;
      }
      if (n < 0) throw new NetlinkError(what, -n);
      const bytes = this.rx.slice(0, n);
      this.onReceive?.(bytes);
      const { msgs, error } = decodeMessages(bytes);
      if (error) throw new NetlinkError(`${what}: ${error}`, E.EPROTO);
      for (const m of msgs) {
        if (m.seq !== seq) continue; // a stale reply to an earlier, timed-out request
        if (m.type === NLMSG_ERROR) {
          const e = decodeError(m);
          if (e.errno !== 0) throw new NetlinkError(what, e.errno, e.message);
          return out; // the ACK ends the exchange
        }
        // A dump ends with DONE (the kernel sends no ACK after a dump).
        if (m.type === NLMSG_DONE) return out;
        out.push(m);
      }
    }
  }

  private readable(ms: number): Promise<void> {
    return new Promise((res) => {
      const t = setTimeout(() => {
        this.watcher.stop();
        res();
      }, Math.max(1, ms));
      this.watcher.start(true, false, () => {
        clearTimeout(t);
        this.watcher.stop();
        res();
      });
    });
  }

  close(): void {
    this.watcher.close();
    this.native.close(this.fd);
  }
}
