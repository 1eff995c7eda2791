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
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
