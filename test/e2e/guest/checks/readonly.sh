# A readonly export: reads work, every write fails, nothing changes.
. "$VDX_SRC/test/e2e/guest/lib.sh"
DEV=/dev/vda
wait_until 20 test -b $DEV || fail "$DEV did not appear"
[ "$(cat /sys/block/vda/ro)" = 1 ] || fail "kernel does not see $DEV as read-only"
step "read 4 MiB"
dd if=$DEV of=/dev/null bs=1M count=4 iflag=direct status=none || fail "read failed"
step "write must fail"
if dd if=/dev/zero of=$DEV bs=4k count=1 oflag=direct status=none 2>/tmp/dd.err; then fail "write to a read-only export succeeded"; fi
cat /tmp/dd.err
if blockdev --setrw $DEV 2>/dev/null && dd if=/dev/zero of=$DEV bs=4k count=1 oflag=direct status=none 2>>/tmp/dd.err; then
  fail "forced write to a read-only export succeeded"
fi
echo "READONLY-OK"
