# The vdx vhost-user checks a guest can make on its own: filesystem round trip,
# queue count, serial, fio verification. Knobs: QUEUES, SERIAL, FIO (1 = run fio),
# RESIZE_MIB (the host resizes the bdev when $VDX_RUN/ready-for-resize appears
# and answers with $VDX_RUN/resized; the guest must see the new size).
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
if [ -n "${RESIZE_MIB:-}" ]; then
  step "the host resizes the bdev to $RESIZE_MIB MiB: the guest sees it without a rescan"
  touch "$VDX_RUN/ready-for-resize"
  wait_until 120 test -e "$VDX_RUN/resized" || fail "host never resized"
  want=$((RESIZE_MIB * 2048))
  t0=$(date +%s.%N)
  # vdx's CONFIG_CHANGE_MSG -> QEMU's GET_CONFIG and config interrupt -> virtio_blk's capacity update
  wait_until 20 sectors_are vda $want || fail "vda has $(cat /sys/block/vda/size) sectors 20 s after the resize, not $want"
  awk -v a=$t0 -v b=$(date +%s.%N) 'BEGIN { printf "new size seen %.1f s after the host said resized\n", b - a }'
  # The last MiB was past the old end: the queues now check requests against the new capacity.
  head -c 65536 /dev/urandom >/tmp/tail.bin
  dd if=/tmp/tail.bin of=$DEV bs=64k seek=$(( (RESIZE_MIB - 1) * 16 )) oflag=direct status=none || fail "write past the old end"
  cmp <(dd if=$DEV bs=64k skip=$(( (RESIZE_MIB - 1) * 16 )) count=1 iflag=direct status=none) /tmp/tail.bin || fail "read past the old end differs"
  echo "RESIZE-SEEN-OK"
fi
echo "VDX-BLK-OK"
