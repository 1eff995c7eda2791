# The in-guest half of the vhost-user check: the guest's virtio-blk disk (served
# by the exporter on the host) must survive the filesystem round trip and show
# QUEUES blk-mq queues.
. "$VDX_SRC/test/e2e/guest/lib.sh"
DEV=/dev/${BLK_DEV:-vda}
QUEUES=${QUEUES:-2}
wait_until 20 test -b "$DEV" || fail "$DEV did not appear"
nq=$(ls /sys/block/"${DEV#/dev/}"/mq | wc -l)
step "$DEV has $nq queues"
[ "$nq" = "$QUEUES" ] || fail "$DEV has $nq queues, expected $QUEUES"
fs_roundtrip "$DEV"
echo "BLK-CHECK-OK"
