# Shared helpers for the VM bench scripts. Sourced, never run.
#
# The bench keeps everything it downloads or builds in one machine-wide cache
# folder so that fresh clones (CI runs them) reuse it. Override with VDX_CACHE.

VDX_CACHE="${VDX_CACHE:-/var/cache/vdx}"
VDX_SUITE="${VDX_SUITE:-trixie}"
case "$VDX_CACHE" in
  /tmp|/tmp/*|/run|/run/*)
    echo "vdx-bench: VDX_CACHE=$VDX_CACHE is hidden from the bench guest, which mounts tmpfs on /tmp and /run; choose a folder elsewhere (e.g. /var/cache/vdx)" >&2
    exit 1 ;;
esac
VM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "vdx-bench: $*" >&2; exit 1; }
log() { echo "vdx-bench: $*" >&2; }

need_cmd() { # need_cmd COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "missing '$1': install it with 'apt-get install $2'"
}

need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot and QEMU's 9p passthrough need it)"
}

# The Debian archive this machine already uses, read from apt's own view of its
# sources (any format: sources.list or deb822). Never hard-coded: the workplace
# decides which mirror is reachable.
debian_mirror() {
  if [ -n "${VDX_DEBIAN_MIRROR:-}" ]; then echo "$VDX_DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(apt-cache policy 2>/dev/null | awk '
    /^ *[0-9]+ (https?|file):/ { u = $2; next }
    /^ *release / && u != "" {
      if ($0 ~ /o=Debian,/ && $0 ~ /l=Debian,/ && $0 !~ /l=Debian-Security/) { print u; exit }
      u = ""
    }')
  [ -n "$uri" ] || die "no Debian archive in this machine's apt sources; run 'apt-get update' or set VDX_DEBIAN_MIRROR"
  echo "${uri%/}"
}

# A keyring that verifies the target suite; Debian 12's debian-archive-keyring
# already carries the trixie keys.
debian_keyring() {
  local k=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -r "$k" ] || die "missing $k: install it with 'apt-get install debian-archive-keyring'"
  echo "$k"
}

# Run a command under a lock so that two bench preparations (say a developer's
# and CI's on the same machine) never write the cache at once.
with_cache_lock() {
  mkdir -p "$VDX_CACHE"
  exec 9>"$VDX_CACHE/.lock"
  flock 9
  "$@"
}
