#!/usr/bin/env bash
# Prepare everything the bench guest needs, idempotently: a second run downloads
# nothing. See README "Testing" for what lands where.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need_root
need_cmd qemu-system-x86_64 qemu-system-x86
need_cmd qemu-storage-daemon qemu-system-common
need_cmd qemu-img qemu-utils
need_cmd flock util-linux

prepare() {
  "$VM_DIR/fetch-kernel.sh"
  "$VM_DIR/build-initramfs.sh"
  "$VM_DIR/make-userland.sh"
}
with_cache_lock prepare
log "bench ready in $VDX_CACHE"
