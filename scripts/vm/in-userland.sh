#!/usr/bin/env bash
# Run a command inside the Debian 13 userland (see make-userland.sh), on the host
# or in the bench guest. /dev, /proc, /sys, /tmp and /run are shared with the
# caller so sockets, device nodes and scratch files are visible on both sides.
# The mounts live in a private mount namespace and vanish with the command.
#
#   scripts/vm/in-userland.sh qemu-io --image-opts driver=virtio-blk-vhost-user,path=/tmp/vu.sock ...
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ROOT="$VDX_CACHE/$VDX_SUITE-userland"
[ -d "$ROOT/usr" ] || die "no $VDX_SUITE userland in $ROOT: run scripts/vm/prepare.sh"
[ $# -gt 0 ] || die "usage: in-userland.sh COMMAND [ARG...]"

exec unshare --mount --propagation private -- /bin/sh -c '
  set -e
  r=$1; shift
  mount --rbind /dev "$r/dev"
  mount -t proc proc "$r/proc"
  mount --rbind /sys "$r/sys"
  mount --bind /tmp "$r/tmp"
  mount --bind /run "$r/run"
  cd /
  exec chroot "$r" /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
' in-userland "$ROOT" "$@"
