# VDUSE exporter: vdx with bus=none, so the check adds it to the vDPA bus itself
# (with iproute2) exactly as it does for qemu-storage-daemon.
EXPORT_PID=

export_start() {
  local name=$1 image=$2 queues=$3
  node "$VDX_SRC/dist/cli/main.js" serve \
    --bdev file:name=d0,path="$image" \
    --export vduse:bdev=d0,name="$name",num-queues="$queues",bus=none \
    --rpc-socket "/run/vdx-$name.rpc.sock" --log-format json \
    >"$VDX_RUN/vdx-$name.log" 2>&1 &
  EXPORT_PID=$!
  wait_until 60 test -e /dev/vduse/"$name" || { cat "$VDX_RUN/vdx-$name.log"; fail "vdx did not create /dev/vduse/$name"; }
}

export_stop() {
  [ -n "$EXPORT_PID" ] || return 0
  kill "$EXPORT_PID" 2>/dev/null || true
  wait "$EXPORT_PID" 2>/dev/null || true
  EXPORT_PID=
  [ ! -e /dev/vduse/"${VDUSE_NAME:-vduse0}" ] || fail "/dev/vduse/${VDUSE_NAME:-vduse0} is still there after vdx stopped"
}
