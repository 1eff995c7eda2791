#!/usr/bin/env bash
# Build the bench guest's initramfs: Debian's busybox-static, the modules the
# bench needs (with their dependencies, in load order, decompressed for busybox
# insmod) and guest/init. Rebuilt only when one of those inputs changes.
#
# Result: $VDX_CACHE/initramfs.gz (the bench guest) and inner-initramfs.gz (a
# VM nested in it).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# What the guest loads at boot. Dependencies come from the kernel's modules.dep;
# crc32c_generic is listed by hand because ext4 asks the crypto API for crc32c at
# mount time, which modules.dep cannot know; xts likewise, which dm-crypt asks
# for when a table names aes-xts-plain64 (the crypt e2e, with loop).
MODULES=(virtio_blk 9p 9pnet_virtio ext4 crc32c_generic vdpa vduse virtio_vdpa vhost_vdpa ublk_drv loop dm_crypt xts)

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

# build OUT INIT MODULE...: an initramfs with busybox, INIT as /init and the
# modules (with their dependencies, in load order).
build() {
  local out=$1 init=$2; shift 2
  local mods=("$@")
  local key
  key=$( { echo "$kver"; echo "${mods[*]}"; cat "$init" "$0"; sha256sum "$BUSYBOX"; } | sha256sum | cut -c1-16)
  if [ -f "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
    log "$(basename "$out") up to date"
    return 0
  fi
  # Depth-first over modules.dep gives a load order in which every module follows
  # its dependencies. Built-in modules have no entry and need no loading.
  declare -A SEEN=()
  ORDER=()
  visit() {
    local p=$1 d
    [ -n "${SEEN[$p]:-}" ] && return
    SEEN[$p]=1
    for d in ${DEPS[$p]}; do visit "$d"; done
    ORDER+=("$p")
  }
  local m p
  for m in "${mods[@]}"; do
    p=${BYNAME[${m//-/_}]:-}
    if [ -z "$p" ]; then
      grep -q "/${m}.ko" "$MODDIR/modules.builtin" || die "module $m is neither in modules.dep nor built in ($kver)"
      continue
    fi
    visit "$p"
  done
  local stage
  stage=$(mktemp -d "$VDX_CACHE/initramfs.XXXXXX")
  mkdir -p "$stage"/{bin,sbin,proc,sys,dev,host,lib/modules}
  cp "$BUSYBOX" "$stage/bin/busybox"
  local applet
  for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
  done
  : >"$stage/modules.order"
  local name
  for p in "${ORDER[@]}"; do
    name=${p##*/}; name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
    case "$p" in
      *.xz) xz -dc "$MODDIR/$p" >"$stage/lib/modules/$name" ;;
      *.zst) zstd -qdc "$MODDIR/$p" >"$stage/lib/modules/$name" ;;
      *.gz) gzip -dc "$MODDIR/$p" >"$stage/lib/modules/$name" ;;
      *) cp "$MODDIR/$p" "$stage/lib/modules/$name" ;;
    esac
    echo "$name" >>"$stage/modules.order"
  done
  install -m 755 "$init" "$stage/init"
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$out.tmp"
  rm -rf "$stage"
  mv "$out.tmp" "$out"
  echo "$key" >"$out.key"
  log "$(basename "$out") with ${#ORDER[@]} modules written"
}

declare -A DEPS=() BYNAME=()
while IFS= read -r line; do
  mod=${line%%:*}
  DEPS[$mod]=${line#*:}
done <"$MODDIR/modules.dep"
for path in "${!DEPS[@]}"; do
  base=${path##*/}; base=${base%%.ko*}
  BYNAME[${base//-/_}]=$path
done

build "$VDX_CACHE/initramfs.gz" "$VM_DIR/guest/init" "${MODULES[@]}"
# The nested guest (a VM on a vhost-vdpa device inside the bench guest) needs only virtio_blk.
build "$VDX_CACHE/inner-initramfs.gz" "$VM_DIR/guest/inner-init" virtio_blk
