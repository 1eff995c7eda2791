# Helpers for scripts that run inside the bench guest (bash, root, cwd = $VDX_RUN).
# Sourced by the checks; every failure prints why and exits non-zero.
set -euo pipefail

USERLAND="$VDX_SRC/scripts/vm/in-userland.sh"

step() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# wait_until SECONDS COMMAND...: poll until COMMAND succeeds.
wait_until() {
  local limit=$1; shift
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.1
  done
}

# sectors_are DEV N: DEV (vda or /dev/vda) has N 512-byte sectors now. A
# function, so that wait_until reads the size on every try (a "$(cat ...)" in
# wait_until's arguments would be read once, before the first).
sectors_are() { [ "$(cat "/sys/block/${1#/dev/}/size")" = "$2" ]; }

# ask NAME: have the host do NAME (vm.ts serveRequests) and wait until it says done.
ask() {
  touch "$VDX_RUN/req-$1"
  wait_until "${2:-60}" test -e "$VDX_RUN/ack-$1" || fail "host did not do $1"
}

# Files with random content, a nested directory and a hard-to-compress size,
# written to a fresh ext4 on DEV; their checksums are kept in /tmp/fs.sums.
fs_write() {
  local dev=$1 mnt=/tmp/mnt
  mkdir -p $mnt
  step "mkfs.ext4 on $dev"
  mkfs.ext4 -q -F "$dev"
  mount "$dev" $mnt
  mkdir -p $mnt/dir/sub
  head -c 3M /dev/urandom >$mnt/a.bin
  head -c 777777 /dev/urandom >$mnt/dir/b.bin
  head -c 5000 /dev/urandom >$mnt/dir/sub/c.bin
  seq 1 20000 >$mnt/dir/numbers.txt
  (cd $mnt && find . -type f ! -name lost+found -print0 | sort -z | xargs -0 sha256sum) >/tmp/fs.sums
  umount $mnt
  step "fsck after write"
  fsck.ext4 -fn "$dev"
}

# Mount DEV again and check every file against /tmp/fs.sums; fsck clean.
fs_verify() {
  local dev=$1 mnt=/tmp/mnt
  mkdir -p $mnt
  mount "$dev" $mnt
  (cd $mnt && sha256sum --quiet -c /tmp/fs.sums) || { umount $mnt; fail "checksums differ on $dev"; }
  umount $mnt
  fsck.ext4 -fn "$dev" >/dev/null || fail "fsck found errors on $dev"
  step "files verified on $dev"
}

# The whole round trip the issues ask for: mkfs, write, fsck, remount, compare.
fs_roundtrip() {
  fs_write "$1"
  fs_verify "$1"
}

# ---- vDPA bus (sysfs), used by the peer checks ----

# vdpa_block NAME: the /dev/vdX of a vdpa device bound to virtio_vdpa.
vdpa_block() {
  local b
  b=$(ls -d /sys/bus/vdpa/devices/"$1"/virtio*/block/* 2>/dev/null | head -n 1) || true
  [ -n "$b" ] && echo "/dev/${b##*/}"
}

# vdpa_vhost NAME: the /dev/vhost-vdpa-N of a vdpa device bound to vhost_vdpa.
vdpa_vhost() {
  local v
  v=$(ls -d /sys/bus/vdpa/devices/"$1"/vhost-vdpa-* 2>/dev/null | head -n 1) || true
  [ -n "$v" ] && echo "/dev/${v##*/}"
}

# libblkio_read_write NODE CUR NEXT: through libblkio (qemu-io from the Debian 13
# userland) on a /dev/vhost-vdpa-N, check that the 64 KiB at 1 MiB hold byte CUR, then fill them with NEXT.
libblkio_read_write() {
  local out
  out=$("$USERLAND" qemu-io -c "read -P $2 1M 64k" -c "write -P $3 1M 64k" --image-opts "driver=virtio-blk-vhost-vdpa,path=$1,cache.direct=on" 2>&1) || { echo "$out"; fail "qemu-io failed"; }
  if echo "$out" | grep -q 'Pattern verification failed'; then echo "$out"; fail "libblkio did not read what the guest wrote"; fi
  echo "$out" | grep -q 'wrote 65536/65536' || { echo "$out"; fail "libblkio write failed"; }
}

# vdpa_switch NAME virtio_vdpa|vhost_vdpa: move a device to the other driver at run time.
vdpa_switch() {
  local name=$1 drv=$2 d=/sys/bus/vdpa/devices/$1
  if [ -e "$d/driver" ]; then
    local cur; cur=$(basename "$(readlink "$d/driver")")
    echo "$name" >/sys/bus/vdpa/drivers/"$cur"/unbind
  fi
  echo "$drv" >"$d/driver_override"
  echo "$name" >/sys/bus/vdpa/drivers_probe
  [ "$(basename "$(readlink "$d/driver")")" = "$drv" ] || fail "$name did not bind to $drv"
}

# dev_sha256 DEV: checksum of a whole block device or file.
dev_sha256() { sha256sum <"$1" | cut -d' ' -f1; }

# JSON-RPC calls to the daemon at $RPC from one python3 coprocess: under TCG a
# python or node start costs seconds, a call through the running client
# milliseconds. rpc_start once; then
#   jrpc METHOD [key=value ...]        prints the result as JSON
#   jrpc_get EXPR METHOD [key=value]   prints the Python expression EXPR over the result (as j)
# Values parse as JSON where they can (numbers, true), else are strings, as with
# `vdx rpc`. On an error both print "METHOD: message (code N)" to stderr and return 1.
rpc_start() {
  coproc RPCC { python3 -u -c '
import json, socket, sys
path = sys.argv[1]
def val(v):
    try:
        return json.loads(v)
    except ValueError:
        return v
def call(method, params):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(json.dumps({"jsonrpc": "2.0", "method": method, "id": 1, **({"params": params} if params else {})}).encode())
    buf, dec = "", json.JSONDecoder()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return {"error": {"code": 0, "message": "connection closed with no answer"}}
        buf += chunk.decode()
        try:
            return dec.raw_decode(buf.lstrip())[0]
        except ValueError:
            continue
for line in sys.stdin:
    expr, method, *args = line.rstrip("\n").split("\t")
    r = call(method, {a.split("=", 1)[0]: val(a.split("=", 1)[1]) for a in args})
    if "error" in r:
        print("1 " + (method + ": " + r["error"]["message"] + " (code " + str(r["error"]["code"]) + ")").replace("\n", " "))
    else:
        j = r["result"]
        out = json.dumps(j) if expr == "" else str(eval(expr))
        print("0 " + out.replace("\n", " "))
' "$RPC"; }
}
_rpc_line() {
  local IFS=$'\t'
  printf '%s\n' "$*" >&"${RPCC[1]}"
  local reply; read -r reply <&"${RPCC[0]}" || { echo "rpc client died" >&2; return 1; }
  if [ "${reply%% *}" = 0 ]; then printf '%s\n' "${reply#? }"; else printf '%s\n' "${reply#? }" >&2; return 1; fi
}
jrpc() { _rpc_line "" "$@"; }
jrpc_get() { _rpc_line "$@"; }

# jget EXPR: a Python expression over the JSON on stdin (as `j`), printed.
jget() { python3 -c 'import json, sys; j = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
