# An rbd bdev behind VDUSE, all inside the 6.12 guest: a one-node Ceph cluster
# on the guest's 127.0.0.1, an image written with `rbd import` beforehand,
# vdx's /dev/vdX on it (virtio_vdpa) with a filesystem round trip, then the
# device moved to vhost_vdpa at run time and read by libblkio, and `rbd export`
# seeing what libblkio wrote; an `rbd resize` by another client reaches the
# guest kernel's driver.
. "$VDX_SRC/test/e2e/guest/lib.sh"
VDX="node $VDX_SRC/dist/cli/main.js"
RPC=/run/vdx.rpc.sock
CEPH=/tmp/ceph
ip link set lo up
step "one-node Ceph cluster in the guest"
bash "$VDX_SRC/scripts/ceph/cluster.sh" start $CEPH
export CEPH_CONF=$CEPH/ceph.conf
trap 'kill $VDX_PID 2>/dev/null || true; wait $VDX_PID 2>/dev/null || true; bash "$VDX_SRC/scripts/ceph/cluster.sh" stop $CEPH || true' EXIT
VDX_PID=

step "rbd import of a known image"
head -c 8M /dev/urandom >/tmp/seed.bin
truncate -s 64M /tmp/seed.img
dd if=/tmp/seed.bin of=/tmp/seed.img conv=notrunc status=none
rbd import /tmp/seed.img rbd/vm1 >/dev/null 2>&1 || fail "rbd import"

$VDX serve --bdev rbd:name=r0,pool=rbd,image=vm1,conf=$CEPH_CONF \
  --export vduse:bdev=r0,name=rbd0,num-queues=2 \
  --rpc-socket $RPC --log-format json >"$VDX_RUN/vdx.log" 2>&1 &
VDX_PID=$!
wait_until 120 test -S $RPC || { cat "$VDX_RUN/vdx.log"; fail "vdx did not start"; }
rpc_start
dev=$(jrpc_get 'j[0]["node"]' vduse_get_devices name=rbd0)
[ -b "$dev" ] || { cat "$VDX_RUN/vdx.log"; fail "no block device ($dev)"; }
[ "$(cat /sys/block/${dev#/dev/}/size)" = $((64 * 2048)) ] || fail "$dev is not 64 MiB"
cmp <(head -c 8M "$dev") /tmp/seed.bin || fail "the guest does not read what rbd import wrote"
step "$dev reads the imported image"

fs_roundtrip "$dev"

step "rbd resize by another client reaches the driver (librbd's update watch, a config interrupt)"
rbd resize --size 96M rbd/vm1 >/dev/null 2>&1 || fail "rbd resize"
wait_until 60 sectors_are "$dev" $((96 * 2048)) || {
  grep -E 'resize|size change|unnoticed' "$VDX_RUN/vdx.log" || true
  rbd info rbd/vm1 || true
  fail "$dev still has $(cat /sys/block/${dev#/dev/}/size) sectors after rbd resize to 96M"
}
step "$dev grew to 96 MiB"

head -c 65536 /dev/zero | tr '\0' '\061' >/tmp/pat1.bin
head -c 65536 /dev/zero | tr '\0' '\062' >/tmp/pat2.bin
dd if=/tmp/pat1.bin of=$dev bs=64k seek=16 oflag=direct status=none
step "to vhost_vdpa: libblkio reads the guest's pattern and writes the next"
vh=$(jrpc_get 'j["node"]' vdpa_bind_device name=rbd0 bus=vhost) || fail "bind to vhost"
[ -c "$vh" ] || fail "no vhost-vdpa node after bind ($vh)"
libblkio_read_write "$vh" 0x31 0x32
step "libblkio read the same data through vhost_vdpa"
rbd export rbd/vm1 /tmp/export.img >/dev/null 2>&1 || fail "rbd export"
cmp <(dd if=/tmp/export.img bs=64k skip=16 count=1 status=none) /tmp/pat2.bin || fail "rbd export does not hold libblkio's write"
step "rbd export holds libblkio's write"
echo RBD-VDUSE-OK
