# vdx managing its own VDUSE devices on the 6.12 kernel: a malloc and a file bdev
# exported on virtio_vdpa (/dev/vdX), then moved to vhost_vdpa and back at run
# time with 'vdx vdpa bind' while libblkio reads and writes in between.
. "$VDX_SRC/test/e2e/guest/lib.sh"
VDX="node $VDX_SRC/dist/cli/main.js"
RPC=/run/vdx.rpc.sock
FILE_IMG=/tmp/f0.img
truncate -s 64M $FILE_IMG
$VDX serve --bdev malloc:name=m0,size=64M --bdev file:name=f0,path=$FILE_IMG \
  --export vduse:bdev=m0,name=vdm0,num-queues=2,serial=mal0 \
  --export vduse:bdev=f0,name=vdf0,num-queues=2,serial=file0 \
  --rpc-socket $RPC --log-format json >"$VDX_RUN/vdx.log" 2>&1 &
VDX_PID=$!
trap 'kill $VDX_PID 2>/dev/null || true; wait $VDX_PID 2>/dev/null || true' EXIT
wait_until 90 test -S $RPC || { cat "$VDX_RUN/vdx.log"; fail "vdx did not start"; }
node_of() { $VDX vdpa list --json --rpc-socket $RPC | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s).find(x=>x.name===process.argv[1]);console.log(r?.node??"")})' "$1"; }
$VDX vdpa list --rpc-socket $RPC

for pair in vdm0:mal0 vdf0:file0; do
  name=${pair%%:*}; serial=${pair##*:}
  dev=$(node_of $name)
  [ -b "$dev" ] || fail "$name has no block device ($dev)"
  step "$name is $dev"
  [ "$(ls /sys/block/${dev#/dev/}/mq | wc -l)" = 2 ] || fail "$dev does not have 2 queues"
  [ "$(cat /sys/block/${dev#/dev/}/serial)" = "$serial" ] || fail "$dev serial is not $serial"
  fs_roundtrip "$dev"
  BLK_DEV=${dev#/dev/} FIO_SIZE=16M bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh" || fail "fio on $dev"
done

FDEV=$(node_of vdf0)
step "discard on $FDEV releases blocks of $FILE_IMG"
dd if=/dev/urandom of=$FDEV bs=1M count=16 oflag=direct status=none
sync
before=$(stat -c %b $FILE_IMG)
blkdiscard -o 0 -l $((16 << 20)) $FDEV
after=$(stat -c %b $FILE_IMG)
step "allocated 512-byte blocks: $before -> $after"
[ $((before - after)) -ge $((15 << 11)) ] || fail "discard released only $((before - after)) blocks"

# Run-time bus switching, three round trips; the pattern moves 0x21 -> 0x22 -> 0x23 -> 0x24.
pattern_file() { head -c 65536 /dev/zero | tr '\0' "\\$(printf '%03o' $1)" >/tmp/pat.bin; }
pattern_file 0x21
dd if=/tmp/pat.bin of=$FDEV bs=64k seek=16 oflag=direct status=none
for round in 1 2 3; do
  cur=$((0x20 + round)); next=$((cur + 1))
  step "round $round: to vhost"
  vh=$($VDX vdpa bind vdf0 vhost --rpc-socket $RPC | awk '{print $2}')
  [ -c "$vh" ] || fail "no vhost-vdpa node after bind ($vh)"
  libblkio_read_write "$vh" $cur $next
  step "round $round: back to virtio"
  dev=$($VDX vdpa bind vdf0 virtio --rpc-socket $RPC | awk '{print $2}')
  wait_until 20 test -b "$dev" || fail "no block device after switching back"
  pattern_file $next
  cmp <(dd if=$dev bs=64k skip=16 count=1 iflag=direct status=none) /tmp/pat.bin || fail "guest does not see libblkio's pattern $next"
  step "round $round: guest sees pattern $next"
done
step "resize f0 to 96 MiB: the guest sees the new capacity"
$VDX resize f0 96M --rpc-socket $RPC
FDEV=$(node_of vdf0)
size_is() { [ "$(cat /sys/block/${FDEV#/dev/}/size)" = "$1" ]; }
wait_until 20 size_is $((96 << 11)) || fail "guest sees $(cat /sys/block/${FDEV#/dev/}/size) sectors, expected $((96 << 11))"
dd if=/tmp/pat.bin of=$FDEV bs=64k seek=$((95 * 16)) oflag=direct status=none || fail "cannot write in the new space"
cmp <(dd if=$FDEV bs=64k skip=$((95 * 16)) count=1 iflag=direct status=none) /tmp/pat.bin || fail "new space does not read back"
[ "$(stat -c %s $FILE_IMG)" = $((96 << 20)) ] || fail "$FILE_IMG was not resized"

# The other device kept working through all of it.
MDEV=$(node_of vdm0)
head -c 1M /dev/urandom >/tmp/r.bin
dd if=/tmp/r.bin of=$MDEV bs=1M seek=3 oflag=direct status=none
cmp <(dd if=$MDEV bs=1M skip=3 count=1 iflag=direct status=none) /tmp/r.bin || fail "$MDEV lost data"
step "$MDEV still serves I/O"
echo "VDX-VDUSE-OK"
