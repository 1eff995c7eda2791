# In the bench guest: fio 4 KiB random reads on a VDUSE disk served by vdx and by
# qemu-storage-daemon's vduse-blk export, alternating, ROUNDS times. TCG numbers:
# only the ratio means anything. Prints one "BENCH peer iops" line per run.
. "$VDX_SRC/test/e2e/guest/lib.sh"
ROUNDS=${ROUNDS:-3}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="vdx-vduse qsd-vduse"; else order="qsd-vduse vdx-vduse"; fi
  for exp in $order; do
    (
      . "$VDX_SRC/test/e2e/guest/exporters/$exp.sh"
      truncate -s 256M /tmp/b.img
      export_start vduse0 /tmp/b.img 1
      vdpa dev add name vduse0 mgmtdev vduse
      wait_until 30 vdpa_block vduse0 || fail "no block device"
      dev=$(vdpa_block vduse0)
      fio --name=b --filename="$dev" --rw=randread --bs=4k --iodepth=32 --ioengine=libaio --direct=1 \
        --time_based --runtime="${RUNTIME:-8}" --size=256M --output-format=terse --terse-version=3 >/tmp/f.out 2>&1 || { cat /tmp/f.out; fail fio; }
      echo "BENCH $exp $(awk -F';' '{print $8}' /tmp/f.out)"
      vdpa dev del vduse0
      export_stop
      rm -f /tmp/b.img
    )
  done
done
