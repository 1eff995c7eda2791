// The back-end request channel (VHOST_USER_PROTOCOL_F_BACKEND_REQ, "SLAVE_REQ"
// in QEMU 7.2): a socket the front-end hands over with SET_BACKEND_REQ_FD so
// the back-end can speak first. vdx uses it for one thing, CONFIG_CHANGE_MSG
// after a resize; without it a front-end sees a new capacity only when it
// next asks (GET_CONFIG), which QEMU does at realize only.
//
// The front-end is not trusted to read what we send: every send is
// non-blocking, and a send that fails drops the channel rather than queue,
// retry or wait. We never set NEED_REPLY, so nothing is ever read from the
// socket and a front-end that answers garbage (or nothing) cannot stall us.
import type { Logger } from 'pino';
import type { NativeShim } from '../../native/index.js';
import { VHOST_USER_HDR_SIZE, encodeConfigChange } from './proto.js';

export class BackendChannel {
  private fd = -1;
  private readonly buf = new Uint8Array(VHOST_USER_HDR_SIZE);
  private readonly view = new DataView(this.buf.buffer);

  constructor(
    private readonly native: NativeShim,
    private readonly log: Logger,
  ) {}

  get open(): boolean {
    return this.fd >= 0;
  }

  /**
   * Take over `fd` from SET_BACKEND_REQ_FD, closing any previous channel
   * (QEMU sends a new one after it re-inits the device). On an fd we could
   * not use it is closed, the old channel is kept, and this throws.
   */
  set(fd: number): void {
    // O_NONBLOCK lives on the open file description, which the front-end's own
    // copy would share; QEMU closes its copy right after sending, so this only
    // changes ours, and sendmsg can then never block the event loop.
    let rc = this.native.setNonblocking(fd, true);
    // A zero-length send puts nothing on a stream socket but checks that this is
    // a socket we can write to: ENOTSOCK (an eventfd, a pipe), ENOTCONN, EPIPE.
    if (rc === 0) rc = this.native.sendMsg(fd, this.buf, 0, 0, []);
    if (rc !== 0) {
      this.native.close(fd);
      throw new Error(`back-end request fd is not a connected socket (errno ${-rc})`);
    }
    this.close();
    this.fd = fd;
  }

  /**
   * Send CONFIG_CHANGE_MSG. Returns false when there is no channel or the send
   * failed; a failed send is logged and drops the channel, so the front-end is
   * back to reading the config when it asks.
   */
  configChanged(): boolean {
    if (this.fd < 0) return false;
    const n = encodeConfigChange(this.view, 0);
    const rc = this.native.sendMsg(this.fd, this.buf, 0, n, []);
    if (rc === n) return true;
    // -EAGAIN means the socket buffer (~200 KiB) is full of our unread
    // messages: the front-end is not reading and waiting would not change that.
    // A short write leaves the stream mid-message. Neither channel is usable.
    this.log.warn(
      { rc },
      rc < 0 ? `back-end request CONFIG_CHANGE_MSG failed (errno ${-rc}); dropping the channel` : `back-end request CONFIG_CHANGE_MSG cut short (${rc} of ${n} bytes); dropping the channel`,
    );
    this.close();
    return false;
  }

  close(): void {
    if (this.fd < 0) return;
    this.native.close(this.fd);
    this.fd = -1;
  }
}
