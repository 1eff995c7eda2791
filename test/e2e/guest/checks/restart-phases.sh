# vdx SIGKILLed under guest I/O and started again (restart.test.ts): the guest
# runs fio with verification on vda (file bdev, O_DIRECT, split ring), on a
# file in an ext4 mounted from vdb (file bdev through the page cache, packed
# ring) and on vdc and vdd (nbd exports that answer reads after 20 ms and
# writes after 2 ms; split and packed) while the host kills vdx; every request
# must complete, once, with the right data.
. "$VDX_SRC/test/e2e/guest/lib.sh"

RUNTIME=${RUNTIME:-60}
for d in vda vdb vdc vdd; do
  wait_until 30 test -b /dev/$d || fail "/dev/$d did not appear"
done

# Feature bit 34 (VIRTIO_F_RING_PACKED), as the driver negotiated it.
for d in vda:0 vdb:1 vdc:0 vdd:1; do
  [ "$(cut -c35 "/sys/block/${d%:*}/device/features")" = "${d#*:}" ] || fail "${d%:*}: packed ring negotiated is not ${d#*:}"
done

# fio_load NAME FILE [fio options...]: randrw QD16 for RUNTIME s, every write read back and checked.
fio_load() {
  local name=$1 file=$2; shift 2
  fio --name="$name" --filename="$file" --rw=randrw --bs=4k --ioengine=libaio --iodepth=16 --direct=1 \
    --time_based --runtime="$RUNTIME" --verify=crc32c --verify_backlog=256 --verify_fatal=1 --randrepeat=0 \
    --output-format=terse --terse-version=3 "$@" >"/tmp/fio-$name.out" 2>&1
}
# terse v3: 5 errors, 6 read KiB, 47 write KiB, 39 read clat max (µs), 80 write clat max (µs)
fio_report() {
  awk -F';' -v n="$1" '{ printf "fio %s: read %s KiB, wrote %s KiB, errors %s, longest read %.0f ms, longest write %.0f ms\n", n, $6, $47, $5, $39 / 1000, $80 / 1000 }' "/tmp/fio-$1.out"
}

step "ext4 on vdb"
mkfs.ext4 -q -F /dev/vdb
mkdir -p /tmp/mnt
mount /dev/vdb /tmp/mnt

step "fio on vda and on ext4 (vdb) for ${RUNTIME}s while the host kills vdx"
fio_load raw /dev/vda --size=48M &
RAW=$!
fio_load fs /tmp/mnt/fio.dat --size=24M &
FS=$!
fio_load slow /dev/vdc --size=16M &
SLOW=$!
fio_load slowpacked /dev/vdd --size=16M &
SLOWPACKED=$!
sleep 2
touch "$VDX_RUN/req-kills"
rc=0
wait $RAW || { cat /tmp/fio-raw.out; rc=1; }
wait $FS || { cat /tmp/fio-fs.out; rc=1; }
wait $SLOW || { cat /tmp/fio-slow.out; rc=1; }
wait $SLOWPACKED || { cat /tmp/fio-slowpacked.out; rc=1; }
[ $rc = 0 ] || fail "fio failed across the restarts"
test -e "$VDX_RUN/ack-kills" || fail "fio ended before the host had finished its kills: they must all land under I/O"
fio_report raw
fio_report fs
fio_report slow
fio_report slowpacked
for n in raw fs slow slowpacked; do
  awk -F';' '$5 != 0 { exit 1 }' "/tmp/fio-$n.out" || fail "fio $n counted errors"
done

step "ext4 unmounted and checked"
umount /tmp/mnt
fsck.ext4 -fn /dev/vdb || fail "fsck found errors on vdb"

if dmesg | grep -iE 'I/O error|blk_update_request|virtio.*(broken|not a head)|Buffer I/O'; then
  fail "the guest kernel logged I/O errors"
fi
echo "RESTART-OK"
