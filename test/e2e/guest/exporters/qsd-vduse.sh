# VDUSE exporter: qemu-storage-daemon's vduse-blk export (the reference peer).
# Contract for every VDUSE exporter file:
#   export_start NAME IMAGE QUEUES   create /dev/vduse/NAME serving IMAGE; return once it exists
#   export_stop                      stop serving; /dev/vduse/NAME is gone afterwards
EXPORT_PID=

export_start() {
  local name=$1 image=$2 queues=$3
  qemu-storage-daemon \
    --blockdev file,node-name=disk,filename="$image",cache.direct=off \
    --export vduse-blk,id=exp0,node-name=disk,name="$name",writable=on,num-queues="$queues" \
    >"$VDX_RUN/qsd.log" 2>&1 &
  EXPORT_PID=$!
  wait_until 20 test -e /dev/vduse/"$name" || { cat "$VDX_RUN/qsd.log"; fail "qemu-storage-daemon did not create /dev/vduse/$name"; }
}

export_stop() {
  [ -n "$EXPORT_PID" ] || return 0
  kill "$EXPORT_PID" 2>/dev/null || true
  wait "$EXPORT_PID" 2>/dev/null || true
  EXPORT_PID=
}
