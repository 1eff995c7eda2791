# VDUSE devices made, bound, listed and deleted over JSON-RPC on the 6.12 kernel
# while another device of the same daemon serves fio verify runs. The calls go
# through lib.sh's jrpc (python3) rather than `vdx rpc`: a node start per call
# costs seconds under TCG. The CLI itself is tested on the host.
. "$VDX_SRC/test/e2e/guest/lib.sh"
VDX="node $VDX_SRC/dist/cli/main.js"
RPC=/run/vdx.rpc.sock
$VDX serve --bdev malloc:name=m0,size=64M --export vduse:bdev=m0,name=busy0,num-queues=2 \
  --rpc-socket $RPC --log-format json >"$VDX_RUN/vdx.log" 2>&1 &
VDX_PID=$!
trap 'touch /tmp/fio.stop; kill $VDX_PID 2>/dev/null || true; wait $VDX_PID 2>/dev/null || true' EXIT
wait_until 90 test -S $RPC || { cat "$VDX_RUN/vdx.log"; fail "vdx did not start"; }

rpc_start
rpc() { jrpc "$@"; }
expect_fail() { # expect_fail PATTERN CMD...: the command fails with exit 1 and says PATTERN
  local pat=$1; shift
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ $rc = 1 ] || fail "'$*' exited $rc, expected 1: $out"
  echo "$out" | grep -q -- "$pat" || fail "'$*' said '$out', expected '$pat'"
  step "refused as expected: $out"
}

BUSY=$(jrpc_get 'j[0]["node"]' vduse_get_devices name=busy0)
[ -b "$BUSY" ] || fail "busy0 has no block device ($BUSY)"
step "busy0 is $BUSY; fio verify runs on it for the whole test"
rm -f /tmp/fio.stop
( n=0; while [ ! -e /tmp/fio.stop ]; do
    BLK_DEV=${BUSY#/dev/} FIO_SIZE=16M bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh" >/tmp/fio-loop.out 2>&1 || { cat /tmp/fio-loop.out; echo FIO-LOOP-FAILED; exit 1; }
    n=$((n + 1)); echo $n >/tmp/fio.passes
  done ) &
FIO_PID=$!
# Its interrupts held back from here on (50 µs x (IOPS - 1000) / 1000: milliseconds at
# any rate), so each waits until the reactor runs dry and sleeps, when it must go.
rpc vduse_set_coalescing name=busy0 delay_base_us=50 iops_threshold=1000 >/dev/null
[ "$(jrpc_get 'str(j[0]["delay_base_us"]) + " " + str(j[0]["iops_threshold"])' vduse_get_devices name=busy0)" = "50 1000" ] || fail "vduse_get_devices does not show busy0's coalescing"
expect_fail "iops_threshold" rpc vduse_set_coalescing name=busy0 delay_base_us=50 iops_threshold=10
step "busy0's interrupts are coalesced while fio runs on it"

rpc bdev_malloc_create name=m1 num_blocks=131072 block_size=512 >/dev/null
out=$(jrpc_get 'j["node"] + " " + j["bus"] + " " + j["driver"] + " " + str(j["msg_timeout"])' vduse_create_blk_device name=rpc1 bdev_name=m1 num_queues=2 serial=rpc-one msg_timeout=75)
DEV=${out%% *}
[ -b "$DEV" ] || fail "rpc1 has no block device: $out"
[ "${out#* }" = "virtio virtio_vdpa 75" ] || fail "rpc1 is not on virtio_vdpa with msg_timeout 75: $out"
[ "$(cat /sys/class/vduse/rpc1/msg_timeout)" = 75 ] || fail "msg_timeout=75 did not reach the kernel: $(cat /sys/class/vduse/rpc1/msg_timeout)"
[ "$(cat /sys/block/${DEV#/dev/}/serial)" = rpc-one ] || fail "rpc1's serial"
step "vduse_create_blk_device made $DEV"
again=$(jrpc_get 'j["node"]' vduse_create_blk_device name=rpc1 bdev_name=m1 num_queues=2 serial=rpc-one msg_timeout=75)
[ "$again" = "$DEV" ] || fail "a repeated create gave $again, not $DEV"
expect_fail 'numQueues=2 (asked 1)' rpc vduse_create_blk_device name=rpc1 bdev_name=m1 num_queues=1 serial=rpc-one msg_timeout=75
expect_fail "parameter 'msg_timeout'" rpc vduse_create_blk_device name=rpc9 bdev_name=m1 msg_timeout=-1
expect_fail "parameter 'bus' must be one of" rpc vduse_create_blk_device name=rpc9 bdev_name=m1 bus=pci
expect_fail "no bdev 'nope'" rpc vduse_create_blk_device name=rpc9 bdev_name=nope

head -c 1M /dev/urandom >/tmp/p.bin
dd if=/tmp/p.bin of="$DEV" bs=1M seek=1 oflag=direct status=none
jrpc_get '" ".join(d["name"] + "=" + str(d["node"]) for d in j)' vduse_get_devices

VH=$(jrpc_get 'j["node"]' vdpa_bind_device name=rpc1 bus=vhost)
[ -c "$VH" ] || fail "rpc1 on vhost_vdpa has no $VH"
out=$("$USERLAND" qemu-img convert --image-opts "driver=virtio-blk-vhost-vdpa,path=$VH,cache.direct=on" -O raw /tmp/back.img 2>&1) || { echo "$out"; fail "libblkio read of $VH"; }
cmp <(dd if=/tmp/back.img bs=1M skip=1 count=1 status=none) /tmp/p.bin || fail "libblkio did not read what the guest wrote"
step "vdpa_bind_device moved rpc1 to $VH; libblkio read the pattern"
DEV=$(jrpc_get 'j["node"]' vdpa_bind_device name=rpc1 bus=virtio)
cmp <(dd if="$DEV" bs=1M skip=1 count=1 iflag=direct status=none) /tmp/p.bin || fail "data changed on the way back"
step "back on virtio_vdpa as $DEV, data intact"

expect_fail "claimed by vduse device rpc1" rpc bdev_malloc_delete name=m1
exec 3<"$DEV"
expect_fail "is open by process" rpc vduse_delete_device name=rpc1
exec 3<&-
rpc vduse_delete_device name=rpc1 >/dev/null
[ ! -e /dev/vduse/rpc1 ] || fail "/dev/vduse/rpc1 still exists"
[ ! -e /sys/bus/vdpa/devices/rpc1 ] || fail "vdpa device rpc1 still exists"
rpc bdev_malloc_delete name=m1 >/dev/null
step "rpc1 and m1 deleted"

# Devices straight onto vhost_vdpa and off the bus, and a burst of create/delete.
rpc bdev_null_create name=n0 num_blocks=131072 block_size=512 >/dev/null
VH=$(jrpc_get 'j["node"]' vduse_create_blk_device name=vh0 bdev_name=n0 bus=vhost)
[ -c "$VH" ] || fail "vh0 is not a vhost-vdpa node ($VH)"
[ "$(jrpc_get 'j["bus"]' vduse_create_blk_device name=nb0 bdev_name=n0 bus=none)" = none ] || fail "nb0 should be off the bus"
[ -e /dev/vduse/nb0 ] || fail "no /dev/vduse/nb0"
for i in 1 2 3 4 5 6 7 8; do rpc vduse_create_blk_device name=burst$i bdev_name=n0 >/dev/null; done
[ "$(jrpc_get 'len(j)' vduse_get_devices)" = 11 ] || fail "expected 11 devices"
for i in 1 2 3 4 5 6 7 8; do rpc vduse_delete_device name=burst$i >/dev/null; done
rpc vduse_delete_device name=vh0 >/dev/null
rpc vduse_delete_device name=nb0 >/dev/null
[ "$(jrpc_get '",".join(d["name"] for d in j)' vduse_get_devices)" = busy0 ] || fail "only busy0 should be left"
step "10 more devices created and deleted"

touch /tmp/fio.stop
wait $FIO_PID || fail "fio verify on busy0 failed while devices came and went"
step "fio verify passed $(cat /tmp/fio.passes) times on busy0 meanwhile"
[ "$(cat /tmp/fio.passes)" -ge 1 ] || fail "no fio pass completed"
$VDX config save --rpc-socket $RPC >/tmp/saved.json
v=$(jget '[(c["params"]["name"], c["params"]["bus"]) for s in j["subsystems"] if s["subsystem"] == "vduse" for c in s["config"] if c["method"] == "vduse_create_blk_device"]' </tmp/saved.json)
[ "$v" = "[('busy0', 'virtio')]" ] || { cat /tmp/saved.json; fail "saved config has vduse devices $v"; }
v=$(jget '[(c["params"]["name"], c["params"]["delay_base_us"], c["params"]["iops_threshold"]) for s in j["subsystems"] if s["subsystem"] == "vduse" for c in s["config"] if c["method"] == "vduse_set_coalescing"]' </tmp/saved.json)
[ "$v" = "[('busy0', 50, 1000)]" ] || { cat /tmp/saved.json; fail "saved config has busy0's coalescing as $v"; }
echo "VDX-VDUSE-RPC-OK"
