# vdx SIGKILLed three times under I/O on its VDUSE devices and stopped once
# for an upgrade (SIGUSR2), and started again with the same command each time
# (vduse.test.ts): /dev/vdX on virtio_vdpa keeps its major:minor and a file
# held open across the restarts, fio with verification sees no error; a device
# on vhost_vdpa keeps its node and a libblkio client's data across a kill;
# control messages the kernel sends while no vdx runs (a libblkio client
# opening the device, an operator's bus switch) wait for the next vdx, which
# answers them; a record that does not match, or none, is refused and the
# device left alone; the ordinary stop removes the devices and what vdx kept of them.
. "$VDX_SRC/test/e2e/guest/lib.sh"
VDX="node $VDX_SRC/dist/cli/main.js"
STATE=/run/vdx-state
IMG=/tmp/r0.img
IMG2=/tmp/r1.img
LOG="$VDX_RUN/vdx-restart.log"
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
    --bdev file:name=r1,path=$IMG2,direct=on --export vduse:bdev=r1,name=vdr1,num-queues=1,bus=vhost,msg-timeout=120 \
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
# waits_on_vduse PID FILE: in the background, note in FILE the kernel function
# PID sleeps in once it waits for a VDUSE daemon's answer (a control message).
waits_on_vduse() {
  ( while kill -0 "$1" 2>/dev/null; do
      w=$(cat /proc/"$1"/wchan 2>/dev/null) || true
      case "$w" in *vduse*) echo "$w" >"$2"; exit 0 ;; esac
      sleep 0.2
    done ) &
}

start_vdx
wait_serving
wait_until 30 vdpa_block vdr0 || fail "vdr0 has no block device"
DEV=$(vdpa_block vdr0)
wait_until 10 test -b "$DEV" || fail "$DEV is not a block device"
MM=$(stat -c %t:%T "$DEV")
VH=$(vdpa_vhost vdr1)
[ -c "$VH" ] || fail "vdr1 has no vhost-vdpa node"
[ "$(cat /sys/class/vduse/vdr1/msg_timeout)" = 120 ] || fail "msg-timeout=120 did not reach /sys/class/vduse/vdr1/msg_timeout ($(cat /sys/class/vduse/vdr1/msg_timeout))"
VDPA_BEFORE=$(vdpa dev show | sort)
step "vdr0 is $DEV ($MM), vdr1 is $VH"
libblkio_read_write "$VH" 0 0x5a

step "fio on $DEV while vdx is killed three times and upgraded once"
exec 7<"$DEV" # a process holding /dev/vdX open across the kills
fio --name=restart --filename="$DEV" --rw=randrw --bs=4k --ioengine=libaio --iodepth=16 --direct=1 --size=48M \
  --time_based --runtime=900 --verify=crc32c --verify_backlog=256 --verify_fatal=1 --randrepeat=0 \
  --output-format=terse --terse-version=3 >/tmp/fio-restart.out 2>&1 &
FIO=$!
sleep 3
# fio runs until the last restart has served a while (it is stopped below), so every kill lands under I/O.
for k in 1 2 3 4; do
  sleep $((2 + RANDOM % 3))
  kill -0 $FIO 2>/dev/null || { cat /tmp/fio-restart.out; fail "fio ended before kill $k"; }
  if [ $k = 2 ]; then
    wait $QIO1 || { cat /tmp/qio1.out; fail "libblkio, started while vdx was down, failed"; }
    grep -q 'read 65536/65536' /tmp/qio1.out && ! grep -q 'Pattern verification failed' /tmp/qio1.out || { cat /tmp/qio1.out; fail "libblkio, started while vdx was down, did not read its pattern"; }
    [ -s /tmp/qio1.wchan ] || fail "libblkio's open did not wait for a VDUSE answer while vdx was down (or it was not seen)"
    step "libblkio opened $VH while vdx was down: it waited in $(cat /tmp/qio1.wchan) for the next vdx, which answered, and read its data"
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
  if [ $k = 1 ]; then
    # A VM starting while no vdx runs: libblkio's open resets the device and
    # waits in the kernel for an answer, which the next vdx gives.
    rm -f /tmp/qio1.wchan
    "$USERLAND" qemu-io -c "read -P 0x5a 1M 64k" --image-opts "driver=virtio-blk-vhost-vdpa,path=$VH,cache.direct=on" >/tmp/qio1.out 2>&1 &
    QIO1=$!
    waits_on_vduse $QIO1 /tmp/qio1.wchan
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
sleep 5
kill -0 $FIO 2>/dev/null || { cat /tmp/fio-restart.out; fail "fio ended before it was stopped"; }
kill -INT $FIO
# Stopped by a signal, fio exits non-zero whatever it found: its report says.
wait $FIO || true
grep -q '^3;' /tmp/fio-restart.out || { cat /tmp/fio-restart.out; fail "fio wrote no report"; }
if grep -vE '^3;|^fio: terminating on signal 2$' /tmp/fio-restart.out | grep -q .; then
  cat /tmp/fio-restart.out; fail "fio reported a problem across the restarts"
fi
awk -F';' '/^3;/ { printf "fio: read %s KiB, wrote %s KiB, errors %s, longest read %.0f ms, longest write %.0f ms\n", $6, $47, $5, $39 / 1000, $80 / 1000 }' /tmp/fio-restart.out
awk -F';' '/^3;/ && $5 != 0 { exit 1 }' /tmp/fio-restart.out || fail "fio counted errors"
[ "$(grep -c 'VDUSE device /dev/vduse/vdr0 re-attached' "$LOG")" = 4 ] || fail "vdr0 was not re-attached at each start"
grep '"msg":"queue resumed from the in-flight log"' "$LOG" | grep -q '"resubmitted":[1-9]' && step "requests in flight at a kill ran again" || echo "note: no kill found a request in flight"

[ "$(vdpa_block vdr0)" = "$DEV" ] && [ "$(stat -c %t:%T "$DEV")" = "$MM" ] || fail "$DEV changed (was $MM)"
[ "$(vdpa dev show | sort)" = "$VDPA_BEFORE" ] || fail "the vdpa devices changed"
# A malloc bdev's data dies with vdx: its device is made anew after a kill, and removed by the upgrade stop.
[ "$(grep -c "VDUSE device vdm0 was left by a previous vdx, but its malloc bdev's data died with it" "$LOG")" = 3 ] || fail "vdm0 was not made anew after each kill"
grep -q 'VDUSE device vdm0 destroyed' "$LOG" || fail "the upgrade stop did not remove vdm0"
wait_until 30 vdpa_block vdm0 || fail "vdm0 has no block device"
[ "$(vdpa_vhost vdr1)" = "$VH" ] || fail "vdr1 moved off $VH"
dd bs=4k count=16 iflag=direct status=none <&7 >/dev/null || fail "the file held open across the kills does not read"
step "$DEV kept $MM and its open file; vdr1 kept $VH"

libblkio_read_write "$VH" 0x5a 0x5c

step "a record that does not match the export is refused, the device left alone"
kill -9 $VDX_PID
wait $VDX_PID 2>/dev/null || true
# Meanwhile an operator moves vdr1 to virtio_vdpa: the probe resets the device
# and waits for an answer through the refused starts below (msg-timeout=120)
# until a vdx takes the device back.
rm -f /tmp/switch.wchan
( vdpa_switch vdr1 virtio_vdpa ) >/tmp/switch.out 2>&1 &
SWITCH=$!
waits_on_vduse $SWITCH /tmp/switch.wchan
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
wait $SWITCH || { cat /tmp/switch.out; fail "the bus switch made while vdx was down failed"; }
[ -s /tmp/switch.wchan ] || fail "the bus switch did not wait for a VDUSE answer while vdx was down (or it was not seen)"
wait_until 30 vdpa_block vdr1 || fail "vdr1 has no block device after the switch"
DEV1=$(vdpa_block vdr1)
wait_until 10 test -b "$DEV1" || fail "$DEV1 is not a block device"
bytes=$(dd if="$DEV1" bs=64k skip=16 count=1 iflag=direct status=none | od -An -tx1 -v | tr -s ' \n' '\n' | sort -u | tr -d '\n')
[ "$bytes" = 5c ] || fail "vdr1 on virtio_vdpa does not hold what libblkio wrote (bytes: $bytes)"
step "a switch of vdr1 to virtio_vdpa made while vdx was down waited in $(cat /tmp/switch.wchan); $DEV1 reads libblkio's data"

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
