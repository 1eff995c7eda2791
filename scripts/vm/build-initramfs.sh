#!/usr/bin/env bash
# Build the bench guest's initramfs: Debian's busybox-static, the modules the
# bench needs (with their dependencies, in load order, decompressed for busybox
# insmod) and guest/init. Rebuilt only when one of those inputs changes.
#
# Result: $VDX_CACHE/initramfs.gz
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# What the guest loads at boot. Dependencies come from the kernel's modules.dep;
# crc32c_generic is listed by hand because ext4 asks the crypto API for crc32c at
# mount time, which modules.dep cannot know.
MODULES=(virtio_blk 9p 9pnet_virtio ext4 crc32c_generic vdpa vduse virtio_vdpa vhost_vdpa ublk_drv)

need_cmd cpio cpio
need_cmd xz xz-utils
BUSYBOX=/bin/busybox
# The initramfs has no libc, so only the static build will do (it conflicts with
# the dynamic 'busybox' package, which installs the same path).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' && [ -x "$BUSYBOX" ] \
  || die "missing static busybox: install it with 'apt-get install busybox-static'"

KROOT="$VDX_CACHE/kernel/current"
[ -f "$KROOT/.ready" ] || die "no kernel in $KROOT: run scripts/vm/fetch-kernel.sh"
kver=$(cat "$KROOT/.ready")
MODDIR="$KROOT/lib/modules/$kver"

key=$( { echo "$kver"; echo "${MODULES[*]}"; cat "$VM_DIR/guest/init" "$0"; sha256sum "$BUSYBOX"; } | sha256sum | cut -c1-16)
OUT="$VDX_CACHE/initramfs.gz"
if [ -f "$OUT" ] && [ "$(cat "$OUT.key" 2>/dev/null)" = "$key" ]; then
  log "initramfs up to date"
  exit 0
fi

# Depth-first over modules.dep gives a load order in which every module follows
# its dependencies. Built-in modules have no entry and need no loading.
declare -A DEPS=() SEEN=()
while IFS= read -r line; do
  mod=${line%%:*}
  DEPS[$mod]=${line#*:}
done <"$MODDIR/modules.dep"
declare -A BYNAME=()
for path in "${!DEPS[@]}"; do
  base=${path##*/}; base=${base%%.ko*}
  BYNAME[${base//-/_}]=$path
done
ORDER=()
visit() {
  local p=$1 d
  [ -n "${SEEN[$p]:-}" ] && return
  SEEN[$p]=1
  for d in ${DEPS[$p]}; do visit "$d"; done
  ORDER+=("$p")
}
for m in "${MODULES[@]}"; do
  p=${BYNAME[${m//-/_}]:-}
  if [ -z "$p" ]; then
    grep -q "/${m}.ko" "$MODDIR/modules.builtin" || die "module $m is neither in modules.dep nor built in ($kver)"
    continue
  fi
  visit "$p"
done

STAGE=$(mktemp -d "$VDX_CACHE/initramfs.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,sbin,proc,sys,dev,host,lib/modules}
cp "$BUSYBOX" "$STAGE/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$STAGE/bin/$applet"
done
: >"$STAGE/modules.order"
for p in "${ORDER[@]}"; do
  name=${p##*/}; name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
  case "$p" in
    *.xz) xz -dc "$MODDIR/$p" >"$STAGE/lib/modules/$name" ;;
    *.zst) zstd -qdc "$MODDIR/$p" >"$STAGE/lib/modules/$name" ;;
    *.gz) gzip -dc "$MODDIR/$p" >"$STAGE/lib/modules/$name" ;;
    *) cp "$MODDIR/$p" "$STAGE/lib/modules/$name" ;;
  esac
  echo "$name" >>"$STAGE/modules.order"
done
install -m 755 "$VM_DIR/guest/init" "$STAGE/init"
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$key" >"$OUT.key"
log "initramfs with ${#ORDER[@]} modules written to $OUT"
