// The bench itself: a guest boots the 6.12 kernel and has what every later check needs.
import { afterEach, describe, expect, test } from 'vitest';
import { expectGuestOk, killTracked, recordTiming, runGuest } from './vm.js';

afterEach(() => killTracked());

describe('real-kernel bench', () => {
  test('guest boots 6.12 with vduse offering class block', async () => {
    const r = await runGuest({
      name: 'boot',
      script: [
        'set -e',
        'uname -r',
        'vdpa mgmtdev show',
        'ls /sys/bus/vdpa/drivers',
        'test -c /dev/vduse/control && echo control-ok',
        'touch "$VDX_RUN/written" && echo run-share-writable',
        'touch /tmp/x && echo tmp-writable',
        'if touch /usr/vdx-should-fail 2>/dev/null; then echo host-root-writable; fi',
        'read -r line || echo stdin-is-empty',
      ].join('\n'),
    });
    recordTiming('boot', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toMatch(/^6\.12\./m);
    expect(r.output).toMatch(/^vduse:/m);
    expect(r.output).toMatch(/supported_classes.*block/);
    expect(r.output).toMatch(/vhost_vdpa/);
    expect(r.output).toMatch(/virtio_vdpa/);
    expect(r.output).toContain('control-ok');
    expect(r.output).toContain('run-share-writable');
    expect(r.output).toContain('tmp-writable');
    expect(r.output).not.toContain('host-root-writable');
    expect(r.output).toContain('stdin-is-empty');
  });

  test('a failing script reports its status and output', async () => {
    const r = await runGuest({ name: 'fail', script: 'echo before-failure; exit 7' });
    expect(r.status).toBe(7);
    expect(r.output).toContain('before-failure');
  });

  test('a hung guest is killed at the timeout with the console tail', async () => {
    await expect(runGuest({ name: 'hang', script: 'echo hanging; sleep 600', timeoutMs: 25_000 })).rejects.toThrow(
      /no result after 25 s[\s\S]*hanging/,
    );
  });
});
