# vdx SIGKILLed twice under I/O on its VDUSE devices, then stopped for an
# upgrade (SIGUSR2), and started again with the same command each time
# (vduse.test.ts): /dev/vdX on virtio_vdpa keeps its major:minor and a file
# held open across the restarts, fio with verification sees no error; a device
# on vhost_vdpa keeps its node and a libblkio client's data across a kill; a
# record that does not match, or none, is refused and the device left alone;
# the ordinary stop removes the devices and what vdx kept of them.
. "$VDX_SRC/test/e2e/guest/lib.sh"
VDX="node $VDX_SRC/dist/cli/main.js"
STATE=/run/vdx-state
IMG=/tmp/r0.img
IMG2=/tmp/r1.img
LOG="$VDX_RUN/vdx-restart.log"
RUNTIME=${RUNTIME:-55}
truncate -s 64M $IMG
truncate -s 32M $IMG2
: >"$LOG"

GEN=0
VDX_PID=
serving() { [ "$(grep -c '"msg":"serving ' "$LOG")" -ge "$GEN" ]; }
# start_vdx [NUM_QUEUES_OF_R0]: the same command every time (unless told otherwise).
start_vdx() {
  $VDX serve --state-dir $STATE --rpc-socket none --log-format json --reactors 2 \
    --bdev file:name=r0,path=$IMG,direct=on --export vduse:bdev=r0,name=vdr0,num-queues=${1:-2} \
    --bdev file:name=r1,path=$IMG2,direct=on --export vduse:bdev=r1,name=vdr1,num-queues=1,bus=vhost \
    --bdev malloc:name=m0,size=16M --export vduse:bdev=m0,name=vdm0,num-queues=1 \
    >>"$LOG" 2>&1 &
  VDX_PID=$!
}
wait_serving() {
  GEN=$((GEN + 1))
  local end=$(( $(date +%s) + 120 ))
  until serving; do
    kill -0 $VDX_PID 2>/dev/null || { tail -30 "$LOG"; fail "vdx (start $GEN) exited"; }
    [ "$(date +%s)" -lt "$end" ] || { tail -30 "$LOG"; fail "vdx (start $GEN) did not come up"; }
    sleep 0.1
  done
}
trap '[ -n "$VDX_PID" ] && kill $VDX_PID 2>/dev/null; true' EXIT

start_vdx
wait_serving
wait_until 30 vdpa_block vdr0 || fail "vdr0 has no block device"
DEV=$(vdpa_block vdr0)
wait_until 10 test -b "$DEV" || fail "$DEV is not a block device"
MM=$(stat -c %t:%T "$DEV")
VH=$(vdpa_vhost vdr1)
[ -c "$VH" ] || fail "vdr1 has no vhost-vdpa node"
VDPA_BEFORE=$(vdpa dev show | sort)
step "vdr0 is $DEV ($MM), vdr1 is $VH"
libblkio_read_write "$VH" 0 0x5a

step "fio on $DEV for ${RUNTIME}s while vdx is killed twice and upgraded once"
exec 7<"$DEV" # a process holding /dev/vdX open across the kills
fio --name=restart --filename="$DEV" --rw=randrw --bs=4k --ioengine=libaio --iodepth=16 --direct=1 --size=48M \
  --time_based --runtime="$RUNTIME" --verify=crc32c --verify_backlog=256 --verify_fatal=1 --randrepeat=0 \
  --output-format=terse --terse-version=3 >/tmp/fio-restart.out 2>&1 &
FIO=$!
sleep 3
for k in 1 2 3; do
  sleep $((2 + RANDOM % 3))
  if [ $k = 2 ]; then
    # libblkio on vhost_vdpa across this kill: it writes, waits, and reads back after the restart.
    "$USERLAND" qemu-io -c "write -P 0x5b 2M 64k" -c "sleep 6000" -c "read -P 0x5b 2M 64k" \
      --image-opts "driver=virtio-blk-vhost-vdpa,path=$VH,cache.direct=on" >/tmp/qio.out 2>&1 &
    QIO=$!
    wait_until 60 grep -q 'wrote 65536/65536' /tmp/qio.out || { cat /tmp/qio.out; fail "libblkio did not write before the kill"; }
  fi
  t0=$(( $(date +%s%N) / 1000000 ))
  if [ $k = 3 ]; then
    # The upgrade stop: in-flight I/O drains, the devices stay for the next vdx.
    kill -USR2 $VDX_PID
    wait $VDX_PID || fail "vdx did not exit 0 on SIGUSR2"
    grep -q 'VDUSE device vdr0 left in place for the next vdx' "$LOG" || fail "vdr0 was not left in place"
    test -e /dev/vduse/vdr0 && test -b "$DEV" || fail "the upgrade stop removed vdr0"
  else
    kill -9 $VDX_PID
    wait $VDX_PID 2>/dev/null || true
  fi
  start_vdx
  wait_serving
  # pino's first line of the new process (node is up) and its re-attach of vdr0, in ms since the epoch
  first=$(grep -m1 "\"pid\":$VDX_PID," "$LOG" | sed 's/.*"time":\([0-9]*\).*/\1/')
  back=$(grep "\"pid\":$VDX_PID," "$LOG" | grep 'vdr0 re-attached' | sed 's/.*"time":\([0-9]*\).*/\1/')
  step "$([ $k = 3 ] && echo upgrade || echo kill) $k: vdx serving again after $(( $(date +%s%N) / 1000000 - t0 )) ms (node start $((first - t0)) ms, then vdr0 re-attached in $((back - first)) ms)"
done
wait $QIO || { cat /tmp/qio.out; fail "libblkio failed across the kill"; }
grep -q 'Pattern verification failed' /tmp/qio.out && { cat /tmp/qio.out; fail "libblkio read back other data after the restart"; }
grep -q 'read 65536/65536' /tmp/qio.out || { cat /tmp/qio.out; fail "libblkio's read after the restart did not complete"; }
step "libblkio on $VH wrote before a kill and read it back after"
wait $FIO || { cat /tmp/fio-restart.out; fail "fio failed across the restarts"; }
awk -F';' '{ printf "fio: read %s KiB, wrote %s KiB, errors %s, longest read %.0f ms, longest write %.0f ms\n", $6, $47, $5, $39 / 1000, $80 / 1000 }' /tmp/fio-restart.out
awk -F';' '$5 != 0 { exit 1 }' /tmp/fio-restart.out || fail "fio counted errors"
[ "$(grep -c 'VDUSE device /dev/vduse/vdr0 re-attached' "$LOG")" = 3 ] || fail "vdr0 was not re-attached at each start"
grep '"msg":"queue resumed from the in-flight log"' "$LOG" | grep -q '"resubmitted":[1-9]' && step "requests in flight at a kill ran again" || echo "note: no kill found a request in flight"

[ "$(vdpa_block vdr0)" = "$DEV" ] && [ "$(stat -c %t:%T "$DEV")" = "$MM" ] || fail "$DEV changed (was $MM)"
[ "$(vdpa dev show | sort)" = "$VDPA_BEFORE" ] || fail "the vdpa devices changed"
# A malloc bdev's data dies with vdx: its device is made anew after a kill, and removed by the upgrade stop.
[ "$(grep -c "VDUSE device vdm0 was left by a previous vdx, but its malloc bdev's data died with it" "$LOG")" = 2 ] || fail "vdm0 was not made anew after each kill"
grep -q 'VDUSE device vdm0 destroyed' "$LOG" || fail "the upgrade stop did not remove vdm0"
wait_until 30 vdpa_block vdm0 || fail "vdm0 has no block device"
[ "$(vdpa_vhost vdr1)" = "$VH" ] || fail "vdr1 moved off $VH"
dd bs=4k count=16 iflag=direct status=none <&7 >/dev/null || fail "the file held open across the kills does not read"
step "$DEV kept $MM and its open file; vdr1 kept $VH"

libblkio_read_write "$VH" 0x5a 0x5c

step "a record that does not match the export is refused, the device left alone"
kill -9 $VDX_PID
wait $VDX_PID 2>/dev/null || true
start_vdx 1
if wait $VDX_PID; then fail "vdx took a device of another shape"; fi
grep -q "VDUSE device 'vdr0' exists but is not this export's: it has 2 queues, the export asks for 1 (num-queues=)" "$LOG" || { tail -5 "$LOG"; fail "no message naming the difference"; }
test -b "$DEV" || fail "the refused start removed $DEV"
step "a device with no record of vdx creating it is not touched"
mv $STATE/vduse-vdr0.json /tmp/vdr0.json
start_vdx
if wait $VDX_PID; then fail "vdx took a device it has no record of"; fi
grep -q "a VDUSE device named 'vdr0' exists and $STATE has no record of vdx creating it: not touched" "$LOG" || { tail -5 "$LOG"; fail "no message for a foreign device"; }
mv /tmp/vdr0.json $STATE/vduse-vdr0.json
start_vdx
wait_serving
dd if="$DEV" bs=4k count=16 iflag=direct status=none of=/dev/null || fail "$DEV does not read after the refused starts"

step "the ordinary stop removes the devices and their state"
exec 7<&-
kill -TERM $VDX_PID
wait $VDX_PID || fail "vdx did not exit 0 on SIGTERM"
VDX_PID=
! test -e /dev/vduse/vdr0 && ! test -e /dev/vduse/vdm0 || fail "a device is still there: $(ls /dev/vduse)"
[ -z "$(ls $STATE)" ] || fail "state left behind: $(ls $STATE)"
if dmesg | grep -iE 'I/O error|blk_update_request|Buffer I/O|vduse.*(timeout|broken)'; then
  fail "the kernel logged I/O errors"
fi
echo "VDUSE-RESTART-OK"
