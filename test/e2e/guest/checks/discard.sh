# DISCARD and WRITE_ZEROES from the guest: after it, the host checks that the
# image's blocks were released and zeroed. Layout (MiB): 0-16 random data, then
# discard 0-8, write-zeroes 8-12 (no unmap), 12-16 untouched.
. "$VDX_SRC/test/e2e/guest/lib.sh"
DEV=/dev/vda
wait_until 20 test -b $DEV || fail "$DEV did not appear"
[ "$(cat /sys/block/vda/queue/discard_max_bytes)" != 0 ] || fail "no discard support"
[ "$(cat /sys/block/vda/queue/write_zeroes_max_bytes)" != 0 ] || fail "no write-zeroes support"
step "write 16 MiB of random data"
dd if=/dev/urandom of=$DEV bs=1M count=16 oflag=direct status=none
step "blkdiscard 0..8M"
blkdiscard -o 0 -l $((8 << 20)) $DEV
step "blkdiscard --zeroout 8M..12M"
blkdiscard -z -o $((8 << 20)) -l $((4 << 20)) $DEV
cmp -n $((4 << 20)) <(dd if=$DEV bs=1M skip=8 count=4 iflag=direct status=none) /dev/zero || fail "write-zeroes range does not read back as zeroes"
dd if=$DEV bs=1M skip=12 count=4 iflag=direct status=none | cmp -s -n $((4 << 20)) - /dev/zero && fail "untouched range reads as zeroes"
sync
echo "DISCARD-OK"
