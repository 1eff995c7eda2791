#!/usr/bin/env bash
# Install the Debian packages vdx's build, tests and bench need; a no-op when
# they are all there already.
set -euo pipefail

PACKAGES=(
  # native shim (node-gyp)
  python3 make g++
  # bench: guest kernel fetch, initramfs, Debian 13 userland
  apt dpkg kmod cpio xz-utils zstd gzip busybox-static debootstrap debian-archive-keyring util-linux
  # bench: QEMU 7.2 guests and the reference peer (qemu-storage-daemon is in qemu-system-common)
  qemu-system-x86 qemu-system-common qemu-utils
  # used inside the guest from the shared host root
  e2fsprogs iproute2 fio coreutils
  # e2e (crypt): the guest's own dm-crypt opens what vdx's crypt bdev wrote, and the reverse
  cryptsetup-bin
  # e2e (container.test.ts): a vdx disk handed to a container in the guest; podman brings
  # conmon and containers-common, crun is named so that apt does not settle for runc
  podman crun
  # unit tests: promtool check metrics on the /metrics exposition (Debian ships promtool in
  # prometheus, whose server is stopped and disabled below)
  prometheus
  # unit tests: systemd-analyze verify on contrib/systemd/vdx.service
  systemd
  # rbd bdev: librbd is dlopened at run time; e2e and bench: a one-node Ceph cluster on 127.0.0.1
  # (scripts/ceph/cluster.sh; no mgr), uuidgen for its OSD
  librbd1 librados2 ceph-mon ceph-osd ceph-common uuid-runtime
  # bench: qemu-storage-daemon's rbd driver (block-rbd.so)
  qemu-block-extra
  # nbd bdev e2e and bench: NBD servers on unix sockets and 127.0.0.1
  nbdkit
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Another apt or dpkg may hold the locks on a fresh machine (unattended upgrades,
# a first boot's setup): wait for them instead of failing.
# DPkg::Lock::Timeout covers dpkg's locks; apt-get update takes the lists lock
# and fails at once while someone holds it, so it is retried then.
LOCK_WAIT=(-o DPkg::Lock::Timeout=900)
for try in $(seq 1 90); do
  if out=$(apt-get "${LOCK_WAIT[@]}" update -q 2>&1); then echo "$out"; break; fi
  if ! grep -q 'Could not get lock' <<<"$out" || [ "$try" = 90 ]; then echo "$out" >&2; exit 1; fi
  echo "install-deps: apt's lists are locked by another process; waiting" >&2
  sleep 10
done
apt-get "${LOCK_WAIT[@]}" install -y -q --no-install-recommends "${missing[@]}"
# Debian's prometheus starts its server where services may start (systemd as init); vdx only
# wants promtool, so leave no server running or enabled.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service || true
  elif [ -x /etc/init.d/prometheus ]; then
    /etc/init.d/prometheus stop || true
  fi
fi
