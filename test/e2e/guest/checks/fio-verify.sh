# Random read-write with crc32c verification on the guest's virtio-blk disk.
. "$VDX_SRC/test/e2e/guest/lib.sh"
DEV=/dev/${BLK_DEV:-vda}
step "fio randrw --verify=crc32c on $DEV"
fio --name=verify --filename="$DEV" --rw=randrw --bs=4k --size="${FIO_SIZE:-24M}" --ioengine=libaio --iodepth=16 \
  --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=0 --output-format=terse --terse-version=3 \
  >/tmp/fio.out 2>&1 || { cat /tmp/fio.out; fail "fio verify failed"; }
# terse v3: field 5 = read kB, field 46 = write kB
awk -F';' '{ printf "fio: read %s KiB, wrote %s KiB, errors %s\n", $6, $47, $5 }' /tmp/fio.out
echo "FIO-VERIFY-OK"
