# One-off A/B in the bench guest (not part of the repo): vdx with a 12-request
# pass for waiting drivers ($VDX_SRC, reported as vdx-vduse) against the same
# build with 8 (/work/vdx-b8, reported as qsd-vduse), alternating.
. "$VDX_SRC/test/e2e/guest/lib.sh"
B8=/work/vdx-b8
[ -f $B8/dist/cli/main.js ] || fail "no $B8 in the guest"
grep -q 'WAITING_BUDGET = 12' "$VDX_SRC/dist/virtio/blk.js" || fail "VDX_SRC is not the 12 build"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="vdx-vduse qsd-vduse"; else order="qsd-vduse vdx-vduse"; fi
  for exp in $order; do
    if [ $exp = vdx-vduse ]; then root=$VDX_SRC; else root=$B8; fi
    truncate -s 256M /tmp/b.img
    node "$root/dist/cli/main.js" serve --bdev file:name=d0,path=/tmp/b.img \
      --export vduse:bdev=d0,name=vduse0,num-queues=1,bus=none --rpc-socket /run/vdx-ab.sock --log-format json >"$VDX_RUN/vdx-ab.log" 2>&1 &
    PID=$!
    wait_until 60 test -e /dev/vduse/vduse0 || { cat "$VDX_RUN/vdx-ab.log"; fail "no vduse"; }
    vdpa dev add name vduse0 mgmtdev vduse
    wait_until 30 vdpa_block vduse0 || fail "no block device"
    dev=$(vdpa_block vduse0)
    t0=$(cpu_ticks $PID)
    fio --name=b --filename="$dev" --rw=randread --bs=4k --iodepth=32 --ioengine=libaio --direct=1 \
      --time_based --runtime=8 --size=256M --output-format=terse --terse-version=3 >/tmp/f.out 2>&1 || fail fio
    t1=$(cpu_ticks $PID)
    echo "BENCH $exp $(awk -F';' '{print $8}' /tmp/f.out)"
    echo "COST $exp $(awk -F';' '{print int($6 / 4)}' /tmp/f.out) $(( (t1 - t0) * 10000000 )) 0 0"
    vdpa dev del vduse0
    kill $PID; wait $PID
    rm -f /tmp/b.img
  done
done
