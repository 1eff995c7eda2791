# In the bench guest: fio 4 KiB random reads on a VDUSE disk served by vdx and by
# qemu-storage-daemon's vduse-blk export, alternating, ROUNDS times. TCG numbers:
# only the ratio means anything. Prints one "BENCH peer iops" line per run and
# one "COST peer ios cpu_ns kicks irqs" line with what those I/Os cost.
#
# The cost is counted where it is the same for either daemon: the daemon's CPU
# from /proc/PID/stat; in the kernel, by kprobes with in-kernel hit counts
# (hist triggers, so nothing is traced per event), the kicks the driver makes
# (vduse_vdpa_kick_vq: a virtio_vdpa notify) and the interrupts the daemon
# injects (vduse_dev_ioctl with VDUSE_VQ_INJECT_IRQ). Neither daemon is traced.
. "$VDX_SRC/test/e2e/guest/lib.sh"
ROUNDS=${ROUNDS:-3}
T=/sys/kernel/tracing
INJECT_IRQ=$((0x40048117))

mountpoint -q $T || mount -t tracefs nodev $T
echo 'p:vdxkick vduse_vdpa_kick_vq' >>$T/kprobe_events
echo 'p:vdxioctl vduse_dev_ioctl cmd=%si:u32' >>$T/kprobe_events

# counting EVENT [FILTER]: an in-kernel count of EVENT's hits from now on; hits EVENT reads it, uncount drops it.
counting() { echo "hist:keys=common_pid${2:+ if $2}" >$T/events/kprobes/$1/trigger; }
uncount() { echo "!hist:keys=common_pid${2:+ if $2}" >$T/events/kprobes/$1/trigger; }
hits() { awk '/Hits:/ {print $NF; exit}' $T/events/kprobes/$1/hist; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

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
      counting vdxkick
      counting vdxioctl "cmd == $INJECT_IRQ"
      t0=$(cpu_ticks "$EXPORT_PID")
      fio --name=b --filename="$dev" --rw=randread --bs=4k --iodepth=32 --ioengine=libaio --direct=1 \
        --time_based --runtime="${RUNTIME:-8}" --size=256M --output-format=terse --terse-version=3 >/tmp/f.out 2>&1 || { cat /tmp/f.out; fail fio; }
      t1=$(cpu_ticks "$EXPORT_PID")
      kicks=$(hits vdxkick)
      irqs=$(hits vdxioctl)
      uncount vdxkick
      uncount vdxioctl "cmd == $INJECT_IRQ"
      # Every round prints both lines or the run fails: run.mjs pairs the peers' runs by their order.
      [ -n "$kicks" ] && [ -n "$irqs" ] || fail "no kprobe hit counts in $T/events/kprobes/*/hist"
      iops=$(awk -F';' '{print $8}' /tmp/f.out)
      [ -n "$iops" ] || { cat /tmp/f.out; fail "fio reported no IOPS"; }
      echo "BENCH $exp $iops"
      # fio's field 6 is the KiB read: 4 KiB per I/O. /proc ticks are USER_HZ (100 per second).
      echo "COST $exp $(awk -F';' '{print int($6 / 4)}' /tmp/f.out) $(( (t1 - t0) * 10000000 )) $kicks $irqs"
      vdpa dev del vduse0
      export_stop
      rm -f /tmp/b.img
    )
  done
done
