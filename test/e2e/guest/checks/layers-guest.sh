# Layered bdevs in one guest: the example crc module (vdb) carries an ext4
# round trip; a QoS limit (vdc) holds, and holds again once the host raised it;
# fio verify runs pass after pass on a raid1 mirror (vda) while the host fails
# one member, adds it back and waits for its rebuild, until the host says stop.
. "$VDX_SRC/test/e2e/guest/lib.sh"
for d in vda vdb vdc; do wait_until 20 test -b /dev/$d || fail "/dev/$d did not appear"; done

step "example module: ext4 through crc over malloc (vdb)"
fs_roundtrip /dev/vdb
echo "CRC-FS-OK"

# terse v3: field 8 = read IOPS
qos_iops() {
  fio --name=qos --filename=/dev/vdc --rw=randread --bs=4k --ioengine=libaio --iodepth=16 --direct=1 \
    --time_based --runtime=5 --ramp_time=1 --output-format=terse --terse-version=3 | awk -F';' '{ print $8 }'
}
echo "QOS-IOPS-1 $(qos_iops)"
ask raise-qos
echo "QOS-IOPS-2 $(qos_iops)"

step "fio verify passes on the mirror (vda)"
(
  n=0
  while [ ! -e "$VDX_RUN/raid-stop" ]; do
    n=$((n + 1))
    FIO_SIZE=32M BLK_DEV=vda bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh" >/tmp/raid-$n.log 2>&1 ||
      { cat /tmp/raid-$n.log; echo "RAID-FIO-FAILED in pass $n"; exit 1; }
    grep '^fio:' /tmp/raid-$n.log
    : >"$VDX_RUN/raid-pass-$n"
  done
  echo "RAID-PASSES $n"
) &
F=$!
wait $F || fail "fio verify on the mirror failed"
echo "LAYERS-GUEST-OK"
