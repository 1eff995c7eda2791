# The guest half of test/e2e/rbd.test.ts: a vhost-user disk vdx serves from an
# RBD image on the host's one-node cluster. The host side answers through
# files in $VDX_RUN (resized, osd-stopped, osd-started).
. "$VDX_SRC/test/e2e/guest/lib.sh"
DEV=/dev/vda
MiB=$((1 << 20))
wait_until 30 test -b $DEV || fail "no $DEV"
[ "$(cat /sys/block/vda/size)" = $((IMAGE_MIB * 2048)) ] || fail "$DEV is $(cat /sys/block/vda/size) sectors, not $IMAGE_MIB MiB"

step "the guest reads what rbd import wrote"
got=$(head -c $((SEED_MIB * MiB)) $DEV | sha256sum | cut -d' ' -f1)
[ "$got" = "$SEED_SHA" ] || fail "imported data differs: $got"
echo "IMPORT-READ-OK"

FIO_SIZE=24M bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh"
fs_roundtrip $DEV

step "a known pattern at ${PATTERN_MIB} MiB, then the whole disk's hash for rbd export"
head -c $((4 * MiB)) /dev/zero | tr '\0' '\132' | dd of=$DEV bs=1M seek=$PATTERN_MIB oflag=direct status=none
blockdev --flushbufs $DEV

step "resize elsewhere (rbd resize) reaches the guest"
touch "$VDX_RUN/ready-for-resize"
wait_until 60 test -e "$VDX_RUN/resized" || fail "host never resized"
# librbd's update watch -> vdx re-reads the size -> CONFIG_CHANGE_MSG on the
# back-end channel -> QEMU re-reads the config and interrupts the guest.
wait_until 30 sectors_are vda $((RESIZED_MIB * 2048)) || fail "guest size stayed $(cat /sys/block/vda/size) sectors after rbd resize to $RESIZED_MIB MiB"
echo "RESIZE-SEEN-OK"

step "OSD stopped: I/O fails after the OSD timeout, not a hang"
touch "$VDX_RUN/ready-for-failure"
wait_until 60 test -e "$VDX_RUN/osd-stopped" || fail "host never stopped the OSD"
t0=$(date +%s.%N)
if head -c 4096 /dev/urandom | dd of=$DEV bs=4k seek=100 oflag=direct,dsync status=none 2>/tmp/dd.err; then
  fail "a write succeeded with the OSD stopped"
fi
t1=$(date +%s.%N)
if dd if=$DEV of=/dev/null bs=4k skip=200 count=1 iflag=direct status=none 2>>/tmp/dd.err; then
  fail "a read succeeded with the OSD stopped"
fi
t2=$(date +%s.%N)
cat /tmp/dd.err
awk -v a=$t0 -v b=$t1 -v c=$t2 'BEGIN { printf "write failed after %.1f s, read after %.1f s\n", b - a, c - b }'
echo "$t0 $t1 $t2" >"$VDX_RUN/fail-times"
touch "$VDX_RUN/io-failed"

wait_until 60 test -e "$VDX_RUN/osd-started" || fail "host never restarted the OSD"
step "OSD restarted: I/O works again, vdx not restarted"
head -c 65536 /dev/urandom >/tmp/after.bin
dd if=/tmp/after.bin of=$DEV bs=64k seek=$((AFTER_MIB * 16)) oflag=direct status=none || fail "write after the OSD came back"
cmp <(dd if=$DEV bs=64k skip=$((AFTER_MIB * 16)) count=1 iflag=direct status=none) /tmp/after.bin || fail "read after the OSD came back differs"
echo "RECOVERED-OK"

step "hash of the first $IMAGE_MIB MiB for rbd export"
head -c $((IMAGE_MIB * MiB)) $DEV | sha256sum | cut -d" " -f1 >"$VDX_RUN/guest.sha.tmp" && mv "$VDX_RUN/guest.sha.tmp" "$VDX_RUN/guest.sha"
wait_until 60 test -e "$VDX_RUN/host-done" || fail "host never read the hash"
echo "RBD-VHOST-OK"
