# VDUSE with packed virtqueues (packed=on): the 6.12 virtio_vdpa driver takes
# them (VIRTIO_F_RING_PACKED negotiated), a filesystem and fio verify run on
# two queues, then the device moves to vhost_vdpa for libblkio and back, with
# the data and the packed ring state carried across.
. "$VDX_SRC/test/e2e/guest/lib.sh"
VDX="node $VDX_SRC/dist/cli/main.js"
RPC=/run/vdx.rpc.sock
$VDX serve --bdev malloc:name=m0,size=64M \
  --export vduse:bdev=m0,name=vdp0,num-queues=2,packed=on \
  --rpc-socket $RPC --log-format json >"$VDX_RUN/vdx.log" 2>&1 &
VDX_PID=$!
trap 'kill $VDX_PID 2>/dev/null || true; wait $VDX_PID 2>/dev/null || true' EXIT
wait_until 90 test -S $RPC || { cat "$VDX_RUN/vdx.log"; fail "vdx did not start"; }
dev=$($VDX vdpa list --json --rpc-socket $RPC | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[0].node))')
[ -b "$dev" ] || fail "no block device ($dev)"
packed_negotiated() {
  # One character per feature bit; VIRTIO_F_RING_PACKED is bit 34.
  local f; f=$(cat "/sys/block/${1#/dev/}/device/features")
  [ "${f:34:1}" = 1 ]
}
packed_negotiated "$dev" || fail "packed ring not negotiated on $dev"
step "packed virtqueues negotiated on $dev"
[ "$(ls /sys/block/${dev#/dev/}/mq | wc -l)" = 2 ] || fail "$dev does not have 2 queues"
fs_roundtrip "$dev"
BLK_DEV=${dev#/dev/} FIO_SIZE=16M bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh" || fail "fio on $dev"

head -c 65536 /dev/zero | tr '\0' '\061' >/tmp/pat1.bin
head -c 65536 /dev/zero | tr '\0' '\062' >/tmp/pat2.bin
dd if=/tmp/pat1.bin of=$dev bs=64k seek=16 oflag=direct status=none
step "to vhost: libblkio reads the guest's pattern and writes the next"
vh=$($VDX vdpa bind vdp0 vhost --rpc-socket $RPC | awk '{print $2}')
[ -c "$vh" ] || fail "no vhost-vdpa node after bind ($vh)"
libblkio_read_write "$vh" 0x31 0x32
step "back to virtio"
dev=$($VDX vdpa bind vdp0 virtio --rpc-socket $RPC | awk '{print $2}')
wait_until 20 test -b "$dev" || fail "no block device after switching back"
packed_negotiated "$dev" || fail "packed ring not negotiated after switching back"
cmp <(dd if=$dev bs=64k skip=16 count=1 iflag=direct status=none) /tmp/pat2.bin || fail "guest does not see libblkio's pattern"
fs_roundtrip "$dev"
# Which layout each driver chose, from vdx's log (libblkio may keep to split rings).
grep '"queue started"' "$VDX_RUN/vdx.log" | sed 's/.*"queue":\([0-9]*\).*"packed":\([a-z]*\).*/queue \1 packed=\2/'
step "packed VDUSE round trip ok"
