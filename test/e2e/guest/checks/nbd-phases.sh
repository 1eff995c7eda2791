# vdx nbd bdevs seen from a guest, in phases the host takes part in: the guest
# asks for an action by creating $VDX_RUN/req-NAME and waits for ack-NAME.
#   vda: qemu-nbd (unix)         fio verify; then killed and restarted during fio
#   vdb: nbdkit memory (TCP)     fio verify
#   vdc: nbdkit error filter     reads fail only while the host's error file exists
#   vdd: qemu-nbd (unix)         stopped (SIGSTOP): a read fails after io-timeout + reconnect-timeout,
#                                works after SIGCONT; then killed for good: I/O fails after reconnect-timeout
. "$VDX_SRC/test/e2e/guest/lib.sh"

fio_verify() { # fio_verify DEV SIZE
  fio --name=verify --filename="$1" --rw=randrw --bs=4k --size="$2" --ioengine=libaio --iodepth=16 \
    --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=0 --output-format=terse --terse-version=3 \
    >/tmp/fio.out 2>&1 || { cat /tmp/fio.out; return 1; }
  awk -F';' '{ printf "fio: read %s KiB, wrote %s KiB, errors %s\n", $6, $47, $5 }' /tmp/fio.out
}
read4k() { dd if="$1" of=/dev/null bs=4k count=1 skip="${2:-0}" iflag=direct status=none 2>/dev/null; }

for d in vda vdb vdc vdd; do
  wait_until 30 test -b /dev/$d || fail "/dev/$d did not appear"
done
echo "disks: $(for d in vda vdb vdc vdd; do echo -n "$d=$(($(cat /sys/block/$d/size) / 2048))M "; done)"

step "(a) qemu-nbd over a unix socket: fio verify on vda"
fio_verify /dev/vda "${FIO_SIZE:-16M}" || fail "fio verify on qemu-nbd"
echo "PHASE-A-OK"

step "(b) nbdkit memory over TCP 127.0.0.1: fio verify on vdb"
fio_verify /dev/vdb "${FIO_SIZE:-16M}" || fail "fio verify on nbdkit"
echo "PHASE-B-OK"

step "(c) nbdkit error filter: reads fail only while errors are on"
read4k /dev/vdc 8 || fail "read before errors were switched on"
ask errors-on
if read4k /dev/vdc 16; then fail "a read succeeded while the server fails reads"; fi
dd if=/dev/zero of=/dev/vdc bs=4k count=1 seek=32 oflag=direct status=none || fail "a write failed while only reads fail"
read4k /dev/vdb 0 || fail "another disk stopped working while vdc fails reads"
ask errors-off
read4k /dev/vdc 16 || fail "read after errors were switched off"
echo "PHASE-C-OK"

step "(d) qemu-nbd killed and restarted during fio on vda"
fio_verify /dev/vda "${FIO_SIZE_D:-64M}" >/tmp/fio-d.txt 2>&1 &
FIO=$!
sleep "${KILL_AFTER:-1}"
kill -0 $FIO 2>/dev/null || { cat /tmp/fio-d.txt; fail "fio ended before the server was killed; raise FIO_SIZE_D"; }
ask restart-a
wait $FIO || { cat /tmp/fio-d.txt; fail "fio verify across the server restart"; }
cat /tmp/fio-d.txt
echo "PHASE-D-OK"

step "(e) the server of vdd stops replying: a read fails after io-timeout + reconnect-timeout (${IO_TIMEOUT}+${RECONNECT_TIMEOUT}s)"
read4k /dev/vdd 0 || fail "vdd read before the stop"
ask stop-d
t0=$(date +%s.%N)
if read4k /dev/vdd 64; then fail "read succeeded with the server stopped"; fi
t1=$(date +%s.%N)
ask cont-d
wait_until 20 read4k /dev/vdd 64 || fail "vdd did not come back after the server continued"
t2=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "failed after %.1f s; back %.1f s after SIGCONT\n", b - a, c - b }'
awk -v a="$t0" -v b="$t1" -v t="$((IO_TIMEOUT + RECONNECT_TIMEOUT))" 'BEGIN {
  if (b - a < t - 1) { print "FAIL: failed before io-timeout + reconnect-timeout"; exit 1 }
  if (b - a > t + 15) { print "FAIL: took far longer than io-timeout + reconnect-timeout"; exit 1 }
}' || fail "io-timeout not honoured"
echo "PHASE-E-OK"

step "(f) the server of vdd stays down: I/O fails after reconnect-timeout (${RECONNECT_TIMEOUT}s)"
ask kill-d
t0=$(date +%s.%N)
if read4k /dev/vdd 64; then fail "read succeeded with the server down"; fi
t1=$(date +%s.%N)
if read4k /dev/vdd 128; then fail "second read succeeded with the server down"; fi
t2=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "failed after %.1f s, then after %.1f s\n", b - a, c - b }'
awk -v a="$t0" -v b="$t1" -v c="$t2" -v t="$RECONNECT_TIMEOUT" 'BEGIN {
  if (b - a < t - 1) { print "FAIL: failed before the timeout"; exit 1 }
  if (b - a > t + 15) { print "FAIL: took far longer than the timeout"; exit 1 }
  if (c - b > 3) { print "FAIL: the second read did not fail fast"; exit 1 }
}' || fail "reconnect-timeout not honoured"
read4k /dev/vda 0 || fail "vda stopped working"
echo "PHASE-F-OK"
echo "NBD-PHASES-OK"
