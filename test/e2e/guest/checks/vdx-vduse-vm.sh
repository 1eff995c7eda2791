# A VM attaches a vdx VDUSE device: the guest writes data through /dev/vdX
# (virtio_vdpa), vdx moves the device to vhost_vdpa, and a nested QEMU (Debian
# 13's, vhost-vdpa-device-pci with QEMU's default 1024-entry rings) boots the
# same kernel and reads the data back. Nested TCG: a few minutes.
. "$VDX_SRC/test/e2e/guest/lib.sh"
VDX="node $VDX_SRC/dist/cli/main.js"
RPC=/run/vdx.rpc.sock
$VDX serve --bdev malloc:name=m0,size=64M --export vduse:bdev=m0,name=vm0 \
  --rpc-socket $RPC --log-format json >"$VDX_RUN/vdx.log" 2>&1 &
VDX_PID=$!
trap 'kill $VDX_PID 2>/dev/null || true; wait $VDX_PID 2>/dev/null || true' EXIT
wait_until 90 test -S $RPC || { cat "$VDX_RUN/vdx.log"; fail "vdx did not start"; }
dev=$($VDX vdpa list --rpc-socket $RPC | awk '$1=="vm0"{print $5}')
[ -b "$dev" ] || fail "no block device for vm0"
head -c 1048576 /dev/urandom >/tmp/data.bin
dd if=/tmp/data.bin of="$dev" bs=1M oflag=direct status=none
want=$(sha256sum </tmp/data.bin | cut -d' ' -f1)
step "wrote 1 MiB through $dev, sha256 $want"
vh=$($VDX vdpa bind vm0 vhost --rpc-socket $RPC | awk '{print $2}')
step "vm0 is $vh; booting a nested VM on it"
cp "$VDX_CACHE/kernel/current/vmlinuz" /tmp/vmlinuz
cp "$VDX_CACHE/inner-initramfs.gz" /tmp/inner.gz
"$USERLAND" qemu-system-x86_64 -accel tcg -smp 1 -m 256M -nographic -no-reboot -nodefaults -serial stdio \
  -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
  -kernel /tmp/vmlinuz -initrd /tmp/inner.gz -append "console=ttyS0 quiet panic=-1" -nic none \
  -device vhost-vdpa-device-pci,vhostdev="$vh" </dev/null >/tmp/inner.log 2>&1 || true
tr -d '\r' </tmp/inner.log | grep -E 'INNER|vhost|rror' || true
got=$(tr -d '\r' </tmp/inner.log | awk '$1=="INNER-SHA"{print $2}')
[ "$got" = "$want" ] || { tail -20 /tmp/inner.log; fail "the nested VM read $got, expected $want"; }
step "the nested VM read the data vdx serves"
echo "VDX-VDUSE-VM-OK"
