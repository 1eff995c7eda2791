# In the bench guest: two vhost-user-blk disks served by one vdx process, one
# with split virtqueues (1 GiB) and one with packed virtqueues (2 GiB; QEMU
# packed=on), told apart by size. fio 4 KiB random reads at QD1 and QD32 on each,
# alternating, ROUNDS times. Prints one "BENCH layout-qdN iops clat_mean_us" line per run.
. "$VDX_SRC/test/e2e/guest/lib.sh"
ROUNDS=${ROUNDS:-3}
disk_of_sectors() {
  for d in /sys/block/vd*; do if [ "$(cat "$d/size")" = "$1" ]; then basename "$d"; fi; done
}
split=$(disk_of_sectors 2097152)
packed=$(disk_of_sectors 4194304)
[ -n "$split" ] && [ -n "$packed" ] || fail "disks not found: $(ls /sys/block)"
# One character per feature bit; VIRTIO_F_RING_PACKED is bit 34.
f=$(cat "/sys/block/$packed/device/features")
[ "${f:34:1}" = 1 ] || fail "packed ring not negotiated on $packed ($f)"
f=$(cat "/sys/block/$split/device/features")
[ "${f:34:1}" = 0 ] || fail "packed ring negotiated on $split ($f)"
echo "layouts: split=$split packed=$packed"
for r in $(seq 1 "$ROUNDS"); do
  for qd in 1 32; do
    if [ $(((r + qd) % 2)) = 1 ]; then order="split packed"; else order="packed split"; fi
    for layout in $order; do
      eval dev=\$$layout
      fio --name=b --filename="/dev/$dev" --rw=randread --bs=4k --iodepth=$qd --ioengine=libaio --direct=1 \
        --time_based --runtime="${RUNTIME:-6}" --size=1G --output-format=terse --terse-version=3 >/tmp/f.out 2>&1 || { cat /tmp/f.out; fail fio; }
      # terse v3: field 8 read IOPS, field 16 read completion-latency mean (µs)
      echo "BENCH $layout-qd$qd $(awk -F';' '{print $8, $16}' /tmp/f.out)"
    done
  done
done
