#!/usr/bin/env bash
# Build the Debian 13 userland that holds the reference clients and peers
# (QEMU 10 with libblkio, qemu-io/qemu-img, fio, iproute2's vdpa tool). It is
# used on the host and, through the read-only 9p share, inside the bench guest;
# scripts/vm/in-userland.sh runs a command in it.
#
# Result: $VDX_CACHE/$VDX_SUITE-userland with .vdx-packages naming what it holds.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# The reference clients. Changing this list installs only what is new.
PACKAGES=(qemu-utils qemu-block-extra qemu-system-x86 iproute2 fio libblkio-dev)

need_root
need_cmd debootstrap debootstrap
need_cmd unshare util-linux

ROOT="$VDX_CACHE/$VDX_SUITE-userland"
STAMP="$ROOT/.vdx-packages"
want="${PACKAGES[*]}"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  log "$VDX_SUITE userland already cached"
  exit 0
fi

mirror=$(debian_mirror)
keyring=$(debian_keyring)

if [ ! -f "$STAMP" ]; then
  rm -rf "$ROOT.tmp"
  log "debootstrap $VDX_SUITE (minbase) with: $want"
  if ! debootstrap --variant=minbase --keyring="$keyring" \
      --include="$(IFS=,; echo "${PACKAGES[*]}")" \
      "$VDX_SUITE" "$ROOT.tmp" "$mirror" >"$VDX_CACHE/debootstrap.log" 2>&1; then
    tail -n 15 "$VDX_CACHE/debootstrap.log" >&2
    die "debootstrap of $VDX_SUITE failed (log: $VDX_CACHE/debootstrap.log)"
  fi
  # Keep the tree small: downloaded .debs are not needed once installed.
  rm -f "$ROOT.tmp"/var/cache/apt/archives/*.deb
  rm -rf "$ROOT"
  mv "$ROOT.tmp" "$ROOT"
else
  log "adding packages to the $VDX_SUITE userland: $want"
  "$VM_DIR/in-userland.sh" sh -c "apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends $want && apt-get clean" \
    >"$VDX_CACHE/userland-update.log" 2>&1 || { tail -n 15 "$VDX_CACHE/userland-update.log" >&2; die "installing into the userland failed"; }
fi
echo "$want" >"$STAMP"
log "$VDX_SUITE userland ready in $ROOT"
