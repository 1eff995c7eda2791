# The README's first Quick start command, as written: 'npm start' serves the
# embedded default, a malloc disk over vhost-user and, since this kernel has
# VDUSE, a second one as /dev/vdX. Both are used by real clients here.
. "$VDX_SRC/test/e2e/guest/lib.sh"
cd "$VDX_SRC"
npm start >/tmp/out.txt 2>"$VDX_RUN/vdx.log" &
wait_until 120 grep -q 'Stop with Ctrl-C' /tmp/out.txt || { cat /tmp/out.txt "$VDX_RUN/vdx.log"; fail "npm start did not come up"; }
cat /tmp/out.txt
dev=$(sed -n "s/.*vdpa device vdx0 is \(\/dev\/vd[a-z]*\).*/\1/p" /tmp/out.txt)
[ -b "$dev" ] || fail "the VDUSE disk is not a block device ('$dev')"
head -c 65536 /dev/urandom >/tmp/w.bin
dd if=/tmp/w.bin of="$dev" bs=64k oflag=direct status=none
cmp <(dd if="$dev" bs=64k count=1 iflag=direct status=none) /tmp/w.bin || fail "$dev does not read back"
step "$dev reads back what was written"
out=$("$USERLAND" qemu-io -c "write -P 0x5c 0 64k" -c "read -P 0x5c 0 64k" --image-opts driver=virtio-blk-vhost-user,path=/run/vdx/vdx0.sock,cache.direct=on 2>&1) || { echo "$out"; fail "libblkio on /run/vdx/vdx0.sock"; }
echo "$out" | grep -q 'Pattern verification failed' && fail "libblkio read back a different pattern"
step "libblkio wrote and read /run/vdx/vdx0.sock"
pkill -TERM -f '[d]ist/cli/main.js serve'
wait_until 20 sh -c '! pgrep -f "[d]ist/cli/main.js serve"' || fail "vdx did not stop on SIGTERM"
[ ! -e /run/vdx/vdx0.sock ] && [ ! -e /dev/vduse/vdx0 ] || fail "vdx left its socket or VDUSE device behind"
echo "QUICK-START-OK"
