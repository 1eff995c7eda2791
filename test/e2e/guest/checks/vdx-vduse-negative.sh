# Bad requests against vdx's VDUSE and vdpa handling: each gets a clear error,
# vdx keeps running and its other devices keep working.
. "$VDX_SRC/test/e2e/guest/lib.sh"
VDX="node $VDX_SRC/dist/cli/main.js"
RPC=/run/vdx.rpc.sock
$VDX serve --bdev malloc:name=a,size=32M --bdev malloc:name=b,size=32M \
  --export vduse:bdev=a,name=vda0 --export vduse:bdev=b,name=vdb0 \
  --rpc-socket $RPC --log-format json >"$VDX_RUN/vdx.log" 2>&1 &
VDX_PID=$!
trap 'kill $VDX_PID 2>/dev/null || true; wait $VDX_PID 2>/dev/null || true' EXIT
wait_until 90 test -S $RPC || { cat "$VDX_RUN/vdx.log"; fail "vdx did not start"; }

step "vdpa devices and management devices over netlink, no iproute2"
$VDX vdpa mgmtdev | tee /tmp/mgmt.txt
grep -q '^vduse .*block' /tmp/mgmt.txt || fail "vdx vdpa mgmtdev does not list vduse with block"
$VDX vdpa devices | tee /tmp/devs.txt
grep -q '^vda0 ' /tmp/devs.txt && grep -q '^vdb0 ' /tmp/devs.txt || fail "devices not listed"

# The device checks below ask over the one python3 RPC client (lib.sh): two node starts
# per check cost seconds each under TCG. The vdx CLI is what the steps themselves use.
rpc_start
works() { # works NAME: a write and read-back on the device's node
  local dev; dev=$(jrpc_get 'j[0]["node"]' vduse_get_devices name="$1")
  [ -b "$dev" ] || { echo "$1 has no block device ('$dev')"; return 1; }
  head -c 65536 /dev/urandom >/tmp/w.bin
  dd if=/tmp/w.bin of="$dev" bs=64k oflag=direct status=none && cmp <(dd if="$dev" bs=64k count=1 iflag=direct status=none) /tmp/w.bin
}

step "a second daemon asking for an existing name"
if $VDX serve --bdev malloc:name=c,size=16M --export vduse:bdev=c,name=vda0 --rpc-socket none >/tmp/dup.log 2>&1; then fail "duplicate name accepted"; fi
grep -o "a VDUSE device named 'vda0' already exists[^\"]*" /tmp/dup.log || { cat /tmp/dup.log; fail "no clear error for a duplicate name"; }
works vda0 || fail "vda0 broken after the duplicate attempt"

step "netlink: adding an existing device, deleting a missing one"
node --input-type=module -e "
  import { loadNative } from '$VDX_SRC/dist/native/index.js';
  import { VdpaClient } from '$VDX_SRC/dist/vdpa/client.js';
  const c = await VdpaClient.open(loadNative());
  for (const [what, f] of [['add existing', () => c.devNew('vda0')], ['delete missing', () => c.devDel('nosuchdev')]]) {
    try { await f(); console.log(what + ': accepted'); } catch (e) { console.log(what + ': ' + e.message); }
  }
  c.close();
" | tee /tmp/nl.txt
grep -q 'add existing: vdpa dev add vda0 (mgmtdev vduse): EEXIST' /tmp/nl.txt || fail "no EEXIST for an existing device"
grep -q 'delete missing: vdpa dev del nosuchdev: ENODEV (vdpa: device not found)' /tmp/nl.txt || fail "no ENODEV for a missing device"

step "switching a device that is open"
dev=$($VDX vdpa list --rpc-socket $RPC | awk '$1=="vdb0"{print $5}')
exec 3<"$dev"
if $VDX vdpa bind vdb0 vhost --rpc-socket $RPC 2>/tmp/bind.err; then fail "switched a device that is open"; fi
cat /tmp/bind.err
grep -q "cannot move vdb0 to vhost: $dev is open by process" /tmp/bind.err || fail "no clear error for an open device"
exec 3<&-
works vdb0 || fail "vdb0 broken after the refused switch"
step "an unknown export and a bad bus"
out=$($VDX vdpa bind nosuch vhost --rpc-socket $RPC 2>&1) && fail "an unknown export was accepted"
echo "$out" | grep -q "no vduse device 'nosuch'; vduse devices: vda0, vdb0" || fail "no clear error for an unknown export: $out"
out=$($VDX vdpa bind vdb0 pci --rpc-socket $RPC 2>&1) && fail "a bad bus was accepted"
echo "$out" | grep -q "bus 'pci' must be virtio or vhost" || fail "no clear error for a bad bus: $out"
$VDX vdpa bind vdb0 vhost --rpc-socket $RPC || fail "switch after closing failed"
$VDX vdpa bind vdb0 virtio --rpc-socket $RPC || fail "switch back failed"
works vdb0 || fail "vdb0 broken after the switches"
works vda0 || fail "vda0 broken"
kill -0 $VDX_PID || fail "vdx died"

step "stop: devices leave the bus and /dev/vduse"
kill $VDX_PID; wait $VDX_PID || true
$VDX vdpa devices | tee /tmp/devs.txt
grep -q '^vd[ab]0 ' /tmp/devs.txt && fail "devices still on the vDPA bus after vdx stopped"
ls /dev/vduse/
[ ! -e /dev/vduse/vda0 ] && [ ! -e /dev/vduse/vdb0 ] || fail "/dev/vduse nodes left behind"
echo "VDX-VDUSE-NEGATIVE-OK"
