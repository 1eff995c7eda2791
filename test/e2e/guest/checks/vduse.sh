# The VDUSE check, run in the bench guest against any exporter (EXPORTER names a
# file in ../exporters/). It proves, on the real 6.12 kernel:
#   - the vduse management device offers class block;
#   - the exported device, bound to virtio_vdpa, is a /dev/vdX with QUEUES blk-mq
#     queues that survives mkfs/write/fsck/remount/compare;
#   - moved at run time to vhost_vdpa, a libblkio client (qemu-img from the
#     Debian 13 userland) reads exactly the bytes the guest wrote;
#   - moved back to virtio_vdpa, the files are all still there.
. "$VDX_SRC/test/e2e/guest/lib.sh"
. "$VDX_SRC/test/e2e/guest/exporters/${EXPORTER:?EXPORTER must name an exporter}.sh"

NAME=${VDUSE_NAME:-vduse0}
QUEUES=${QUEUES:-2}
IMG=/tmp/$NAME.img
cleanup() {
  vdpa dev del "$NAME" 2>/dev/null || true
  export_stop
}
trap cleanup EXIT

step "vduse management device"
vdpa mgmtdev show | tee /tmp/mgmtdev.txt
grep -q '^vduse:' /tmp/mgmtdev.txt || fail "no vduse management device"
grep -q 'supported_classes.*block' /tmp/mgmtdev.txt || fail "vduse does not offer class block"

truncate -s 64M "$IMG"
step "start exporter $EXPORTER"
export_start "$NAME" "$IMG" "$QUEUES"
vdpa dev add name "$NAME" mgmtdev vduse
wait_until 30 vdpa_block "$NAME" || fail "no block device appeared for $NAME"
DEV=$(vdpa_block "$NAME")
wait_until 10 test -b "$DEV" || fail "$DEV is not a block device node"
step "$NAME is $DEV on virtio_vdpa"
nq=$(ls /sys/block/"${DEV#/dev/}"/mq | wc -l)
[ "$nq" = "$QUEUES" ] || fail "$DEV has $nq queues, expected $QUEUES"

fs_roundtrip "$DEV"
SUM=$(dev_sha256 "$DEV")
step "device sha256 $SUM"

step "switch $NAME to vhost_vdpa"
vdpa_switch "$NAME" vhost_vdpa
wait_until 20 vdpa_vhost "$NAME" || fail "no vhost-vdpa node for $NAME"
VH=$(vdpa_vhost "$NAME")
wait_until 10 test -c "$VH" || fail "$VH is not a character device"
[ -z "$(vdpa_block "$NAME")" ] || fail "$NAME still has a block device after the switch"
step "$NAME is $VH; libblkio reads it"
rm -f /tmp/copy.img
"$USERLAND" qemu-img convert --image-opts "driver=virtio-blk-vhost-vdpa,path=$VH,cache.direct=on" -O raw /tmp/copy.img
[ "$(dev_sha256 /tmp/copy.img)" = "$SUM" ] || fail "libblkio read different bytes than the guest wrote"
step "libblkio read the same bytes"

step "switch $NAME back to virtio_vdpa"
vdpa_switch "$NAME" virtio_vdpa
wait_until 30 vdpa_block "$NAME" || fail "no block device after switching back"
DEV=$(vdpa_block "$NAME")
wait_until 10 test -b "$DEV" || fail "$DEV is not a block device node"
[ "$(dev_sha256 "$DEV")" = "$SUM" ] || fail "device content changed across the round trip"
fs_verify "$DEV"

vdpa dev del "$NAME"
[ ! -e /sys/bus/vdpa/devices/"$NAME" ] || fail "$NAME still on the vdpa bus after dev del"
export_stop
echo "VDUSE-CHECK-OK"
