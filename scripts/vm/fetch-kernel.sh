#!/usr/bin/env bash
# Fetch Debian 13's linux-image-amd64 (6.12, with vdpa/vduse/virtio_vdpa/vhost_vdpa
# as modules) into the cache, through a private apt configuration: its own sources
# list, lists and archive cache, so the machine's apt state is never touched.
#
# Result: $VDX_CACHE/kernel/current -> <version>/ holding vmlinuz and lib/modules.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need_cmd apt-get apt
need_cmd dpkg-deb dpkg
need_cmd depmod kmod

KDIR="$VDX_CACHE/kernel"
if [ -e "$KDIR/current/.ready" ]; then
  log "kernel $(cat "$KDIR/current/.ready") already cached"
  exit 0
fi

APTDIR="$VDX_CACHE/apt-$VDX_SUITE"
mkdir -p "$APTDIR"/{lists/partial,archives/partial,etc/preferences.d,etc/sources.list.d,debs} "$KDIR"
: >"$APTDIR/status"
mirror=$(debian_mirror)
keyring=$(debian_keyring)
cat >"$APTDIR/etc/sources.list" <<EOF
deb [signed-by=$keyring] $mirror $VDX_SUITE main
deb [signed-by=$keyring] $mirror $VDX_SUITE-updates main
EOF
cat >"$APTDIR/apt.conf" <<EOF
Dir::State "$APTDIR";
Dir::State::lists "$APTDIR/lists";
Dir::State::status "$APTDIR/status";
Dir::Cache "$APTDIR";
Dir::Cache::archives "$APTDIR/archives";
Dir::Etc::SourceList "$APTDIR/etc/sources.list";
Dir::Etc::SourceParts "$APTDIR/etc/sources.list.d";
Dir::Etc::Preferences "$APTDIR/etc/preferences";
Dir::Etc::PreferencesParts "$APTDIR/etc/preferences.d";
APT::Architecture "amd64";
APT::Architectures "amd64";
Acquire::Languages "none";
APT::Sandbox::User "root";
EOF
export APT_CONFIG="$APTDIR/apt.conf"

log "reading the $VDX_SUITE package lists"
apt-get -q update >"$APTDIR/update.log" 2>&1 || { tail -5 "$APTDIR/update.log" >&2; die "apt-get update for $VDX_SUITE failed"; }

# linux-image-amd64 is a metapackage; the image itself is its one linux-image-* dependency.
image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$image" ] || die "cannot resolve linux-image-amd64 in $VDX_SUITE"
ver=${image#linux-image-}
log "downloading $image"
(cd "$APTDIR/debs" && apt-get -q download "$image" >/dev/null)
deb=$(ls "$APTDIR/debs/${image}_"*.deb | head -n 1)

rm -rf "$KDIR/$ver.tmp"
mkdir -p "$KDIR/$ver.tmp"
dpkg-deb -x "$deb" "$KDIR/$ver.tmp/root"
root="$KDIR/$ver.tmp/root"
[ -f "$root/boot/vmlinuz-$ver" ] || die "$deb has no boot/vmlinuz-$ver"
mv "$root/boot/vmlinuz-$ver" "$KDIR/$ver.tmp/vmlinuz"
mkdir -p "$KDIR/$ver.tmp/lib"
mv "$root/usr/lib/modules" "$KDIR/$ver.tmp/lib/modules"
rm -rf "$root"
depmod -b "$KDIR/$ver.tmp" "$ver"
echo "$ver" >"$KDIR/$ver.tmp/.ready"
rm -rf "${KDIR:?}/$ver"
mv "$KDIR/$ver.tmp" "$KDIR/$ver"
ln -sfn "$ver" "$KDIR/current"
rm -f "$deb"
log "kernel $ver ready in $KDIR/current"
