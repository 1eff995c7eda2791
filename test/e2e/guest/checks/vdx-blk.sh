# The vdx vhost-user checks a guest can make on its own: filesystem round trip,
# queue count, serial, fio verification. Knobs: QUEUES, SERIAL, FIO (1 = run fio).
. "$VDX_SRC/test/e2e/guest/lib.sh"
DEV=/dev/vda
wait_until 20 test -b $DEV || fail "$DEV did not appear"
nq=$(ls /sys/block/vda/mq | wc -l)
step "$DEV has $nq queues"
[ "$nq" = "${QUEUES:-1}" ] || fail "expected ${QUEUES:-1} queues"
if [ -n "${SERIAL:-}" ]; then
  got=$(cat /sys/block/vda/serial)
  step "serial '$got'"
  [ "$got" = "$SERIAL" ] || fail "serial is '$got', expected '$SERIAL'"
fi
if [ "${PACKED:-0}" = 1 ]; then
  # The virtio features string has one character per bit; VIRTIO_F_RING_PACKED is bit 34.
  f=$(cat /sys/block/vda/device/features)
  [ "${f:34:1}" = 1 ] || fail "packed ring not negotiated (features $f)"
  step "packed virtqueues negotiated"
fi
step "discard_max_bytes $(cat /sys/block/vda/queue/discard_max_bytes) write_zeroes_max_bytes $(cat /sys/block/vda/queue/write_zeroes_max_bytes)"
fs_roundtrip $DEV
if [ "${FIO:-0}" = 1 ]; then bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh"; fi
echo "VDX-BLK-OK"
