# The mission's first use, on the 6.12 kernel: a vdx disk handed to a container.
# A VDUSE export on virtio_vdpa (/dev/vdX) goes to a real container runtime
# (podman with crun, from the shared host root) as `--device /dev/vdX:/dev/disk0`;
# the container writes a pattern with O_DIRECT, and the guest host reads the same
# bytes back twice: through /dev/vdX, and through vhost_vdpa with libblkio, which
# reads vdx's bdev with no kernel block layer or page cache in between. Then, as
# an orchestrator would, a second bdev and VDUSE device are made at run time over
# JSON-RPC, handed to a second container, read back and deleted.
#
# The host root is read-only here, so podman keeps everything under /tmp and /run;
# no registry is reachable, so the image is a tarball of the host's static busybox
# made on the spot and `podman import`ed.
. "$VDX_SRC/test/e2e/guest/lib.sh"
VDX="node $VDX_SRC/dist/cli/main.js"
RPC=/run/vdx.rpc.sock
IMAGE=localhost/vdx-busybox
$VDX serve --bdev malloc:name=c0,size=64M --export vduse:bdev=c0,name=ct0 \
  --rpc-socket $RPC --log-format json >"$VDX_RUN/vdx.log" 2>&1 &
VDX_PID=$!
trap 'kill $VDX_PID 2>/dev/null || true; wait $VDX_PID 2>/dev/null || true' EXIT

# RPC through lib.sh's python client (a node start per call costs seconds under TCG).
rpc_start
rpc() { jrpc "$@"; }
# Step lines carry the seconds since the script started: podman is slow under TCG.
tstep() { step "$* [${SECONDS}s]"; }

# ---- the container runtime, set up while vdx starts
# cgroup v2, as a container host has it; crun puts each container in a cgroup of
# its own there and enforces --device with a cgroup device (eBPF) program.
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
# overlay is a module this guest does not load at boot; take it from the bench's
# kernel tree. Without it podman falls back to the vfs driver (a copy per layer).
DRIVER=vfs
OVL=$VDX_CACHE/kernel/current/lib/modules/$(uname -r)/kernel/fs/overlayfs/overlay.ko.xz
if grep -qw overlay /proc/filesystems || { [ -f "$OVL" ] && xz -dc "$OVL" >/tmp/overlay.ko && insmod /tmp/overlay.ko; }; then
  DRIVER=overlay
fi
export TMPDIR=/tmp # podman import stages the layer in $TMPDIR (default /var/tmp, read-only here)
PODMAN=(podman --root /tmp/containers/storage --runroot /run/containers --tmpdir /run/libpod
  --storage-driver "$DRIVER" --cgroup-manager cgroupfs --events-backend file)
# No securityfs is mounted here, so podman and crun see no AppArmor and apply none.
RUN=(run --rm --network none)

ROOTFS=/tmp/rootfs
mkdir -p $ROOTFS/{bin,dev,proc,sys,tmp,etc}
cp /bin/busybox $ROOTFS/bin/busybox # Debian's busybox-static: no libc needed
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$ROOTFS/bin/$a"; done
tar -C $ROOTFS -cf /tmp/rootfs.tar .
"${PODMAN[@]}" import --quiet /tmp/rootfs.tar $IMAGE >/dev/null || fail "podman import failed"
info=$("${PODMAN[@]}" info --format '{{.Host.OCIRuntime.Name}}, storage {{.Store.GraphDriverName}}, cgroups {{.Host.CgroupsVersion}} ({{.Host.CgroupManager}})')
tstep "$(podman --version) with $info; image $IMAGE imported from a busybox tarball"

# in_container DEV PATTERN SEEK_MiB: a container that gets DEV as /dev/disk0 and
# PATTERN read-only as /pattern, writes it at SEEK_MiB with O_DIRECT, then reads
# it back (O_DIRECT) and prints the sha256 of what the disk holds (kept in /tmp/ct.out).
in_container() {
  timeout 120 "${PODMAN[@]}" "${RUN[@]}" --device "$1:/dev/disk0" -v "$2:/pattern:ro" $IMAGE sh -c "
      set -e
      [ -b /dev/disk0 ] || { echo 'no block device /dev/disk0'; exit 1; }
      echo \"in container: /dev/disk0 is block \$((0x\$(stat -c %t /dev/disk0))):\$((0x\$(stat -c %T /dev/disk0))), \$(blockdev --getsize64 /dev/disk0) bytes\"
      dd if=/pattern of=/dev/disk0 bs=1M seek=$3 oflag=direct conv=fsync 2>/dev/null
      echo \"in container: wrote sha256 \$(sha256sum </pattern | cut -d' ' -f1)\"
      echo \"in container: reads sha256 \$(dd if=/dev/disk0 bs=1M skip=$3 count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)\"
    " >/tmp/ct.out 2>&1 || { cat /tmp/ct.out; fail "podman run with $1 failed"; }
  cat /tmp/ct.out
  grep -q "is block $(stat -c '%Hr:%Lr' "$1")," /tmp/ct.out || fail "the container's /dev/disk0 is not $1"
}

# read_back NAME DEV PATTERN SEEK_MiB: the pattern through DEV (O_DIRECT), then the
# device moved to vhost_vdpa over RPC and read through vdx's bdev with libblkio;
# leaves NAME on vhost_vdpa.
read_back() {
  local name=$1 dev=$2 pat=$3 seek=$4 vh out
  cmp <(dd if="$dev" bs=1M skip="$seek" count=1 iflag=direct status=none) "$pat" || fail "$dev does not hold what the container wrote"
  tstep "the host reads the container's bytes through $dev"
  vh=$(jrpc_get 'j["node"]' vdpa_bind_device name="$name" bus=vhost)
  [ -c "$vh" ] || fail "$name on vhost_vdpa has no node ($vh)"
  rm -f /tmp/back.img
  out=$("$USERLAND" qemu-img convert --image-opts "driver=virtio-blk-vhost-vdpa,path=$vh,cache.direct=on" -O raw /tmp/back.img 2>&1) || { echo "$out"; fail "libblkio read of $vh"; }
  cmp <(dd if=/tmp/back.img bs=1M skip="$seek" count=1 status=none) "$pat" || fail "vdx's bdev behind $name does not hold what the container wrote"
  tstep "$name moved to $vh over RPC; libblkio read the container's bytes from vdx's bdev"
}

# container_writes N DEV NAME MIB: container N gets DEV (the VDUSE device NAME) as
# /dev/disk0 and writes 1 MiB of fresh random bytes at MIB MiB; they are read back
# in the container, then through DEV and through vdx's bdev (read_back).
container_writes() {
  local n=$1 dev=$2 name=$3 mib=$4 pat=/tmp/p$1.bin
  head -c 1M /dev/urandom >"$pat"
  tstep "container $n gets $dev as /dev/disk0 and writes 1 MiB at $mib MiB"
  in_container "$dev" "$pat" "$mib"
  grep -q "reads sha256 $(sha256sum <"$pat" | cut -d' ' -f1)" /tmp/ct.out || fail "container $n did not read back its pattern"
  read_back "$name" "$dev" "$pat" "$mib"
}

wait_until 90 test -S $RPC || { cat "$VDX_RUN/vdx.log"; fail "vdx did not start"; }
DEV=$(jrpc_get 'j[0]["node"]' vduse_get_devices name=ct0)
[ -b "$DEV" ] || fail "ct0 has no block device ($DEV)"
tstep "vdx exports c0 as ct0: $DEV on virtio_vdpa"

# ---- 1: the disk vdx was started with, handed to a container
container_writes 1 "$DEV" ct0 1
DEV=$(jrpc_get 'j["node"]' vdpa_bind_device name=ct0 bus=virtio)
[ -b "$DEV" ] || fail "ct0 has no block device after moving back ($DEV)"
tstep "ct0 back on virtio_vdpa as $DEV, for whatever runs next"

# ---- 2: a disk made at run time over JSON-RPC, as an orchestrator would
rpc bdev_malloc_create name=c1 num_blocks=65536 block_size=512 >/dev/null
DEV2=$(jrpc_get 'j["node"]' vduse_create_blk_device name=ct1 bdev_name=c1)
[ -b "$DEV2" ] || fail "ct1 has no block device: $DEV2"
tstep "RPC: bdev_malloc_create c1 + vduse_create_blk_device ct1 gave $DEV2"
container_writes 2 "$DEV2" ct1 3
rpc vduse_delete_device name=ct1 >/dev/null
[ ! -e /dev/vduse/ct1 ] || fail "/dev/vduse/ct1 still exists"
[ ! -e /sys/bus/vdpa/devices/ct1 ] || fail "vdpa device ct1 still exists"
rpc bdev_malloc_delete name=c1 >/dev/null
tstep "RPC: vduse_delete_device ct1 and bdev_malloc_delete c1 once the container was gone"
[ "$(jrpc_get '",".join(d["name"] + "=" + str(d["node"]) for d in j)' vduse_get_devices)" = "ct0=$DEV" ] || fail "only ct0 ($DEV) should be left"
cmp <(dd if="$DEV" bs=1M skip=1 count=1 iflag=direct status=none) /tmp/p1.bin || fail "ct0 lost container 1's bytes"
tstep "ct0 still holds container 1's bytes at $DEV"
echo "VDX-CONTAINER-OK"
