# The crypt bdev against the guest kernel's own dm-crypt, both ways. vdx's crypt
# (aes-xts-plain64, 512-bit key, 4096-byte sectors) over a file, exported over
# VDUSE as /dev/vdX: ext4 written through it; with vdx stopped, the same file
# through loop + `cryptsetup open --type plain` mounts with the same checksums
# and fscks clean. Then a volume made by cryptsetup (256-bit key, 512-byte
# sectors) with ext4 on it is read through vdx; and 4 MiB written with
# iv-large-sectors=on read back by `cryptsetup --iv-large-sectors`.
. "$VDX_SRC/test/e2e/guest/lib.sh"
# No udev in the bench guest: libdevmapper must not wait for it.
export DM_DISABLE_UDEV=1
VDX="node $VDX_SRC/dist/cli/main.js"
RPC=/run/vdx.rpc.sock
VDX_PID=
stop_vdx() { [ -z "$VDX_PID" ] || { kill $VDX_PID; wait $VDX_PID || fail "vdx exited with $?"; VDX_PID=; }; }
trap 'stop_vdx 2>/dev/null || true' EXIT
serve_crypt() { # serve_crypt IMG KEY SECTOR [,MORE-KEYS]
  $VDX serve --bdev file:name=f0,path=$1 --bdev crypt:name=c0,base=f0,key-file=$2,sector-size=$3${4:-} \
    --export vduse:bdev=c0,name=vdc0 --rpc-socket $RPC --log-format json >>"$VDX_RUN/vdx.log" 2>&1 &
  VDX_PID=$!
  wait_until 90 test -S $RPC || { cat "$VDX_RUN/vdx.log"; fail "vdx did not start"; }
  DEV=$($VDX vdpa list --json --rpc-socket $RPC | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[0]?.node??""))')
  wait_until 20 test -b "$DEV" || fail "no block device for vdc0 ($DEV)"
  [ "$(cat /sys/block/${DEV#/dev/}/queue/logical_block_size)" = "$3" ] || fail "$DEV has $(cat /sys/block/${DEV#/dev/}/queue/logical_block_size)-byte blocks, not $3"
  step "vdx crypt over $1 is $DEV ($3-byte sectors)"
}
plain_open() { # plain_open IMG KEY KEYBITS SECTOR NAME [OPTION] -> /dev/mapper/NAME
  LOOP=$(losetup -f --show "$1")
  cryptsetup open --type plain --cipher aes-xts-plain64 --key-size $3 --key-file "$2" --sector-size $4 ${6:-} "$LOOP" $5 ||
    fail "cryptsetup open of $1 failed"
  step "dm-crypt plain over $LOOP is /dev/mapper/$5"
}
plain_close() { cryptsetup close $1; losetup -d "$LOOP"; }

step "vdx writes, dm-crypt reads"
truncate -s 64M /tmp/c1.img
head -c 64 /dev/urandom >/tmp/k1.bin
serve_crypt /tmp/c1.img /tmp/k1.bin 4096
fs_write "$DEV"
stop_vdx
# The ciphertext is not the plaintext: no ext4 magic (0xEF53 at byte 1080) on the file itself.
[ "$(od -An -tx1 -j1080 -N2 /tmp/c1.img | tr -d ' ')" != "53ef" ] || fail "the file holds a plain ext4"
plain_open /tmp/c1.img /tmp/k1.bin 512 4096 vx1
fs_verify /dev/mapper/vx1
plain_close vx1
echo "DM-CRYPT-READS-VDX-OK"

step "dm-crypt writes, vdx reads"
truncate -s 64M /tmp/c2.img
head -c 32 /dev/urandom >/tmp/k2.bin
plain_open /tmp/c2.img /tmp/k2.bin 256 512 vx2
fs_write /dev/mapper/vx2
plain_close vx2
serve_crypt /tmp/c2.img /tmp/k2.bin 512
fs_verify "$DEV"
stop_vdx
echo "VDX-READS-DM-CRYPT-OK"

step "iv-large-sectors: vdx writes, dm-crypt --iv-large-sectors reads"
truncate -s 16M /tmp/c3.img
head -c 4M /dev/urandom >/tmp/c3.data
serve_crypt /tmp/c3.img /tmp/k1.bin 4096 ,iv-large-sectors=on
dd if=/tmp/c3.data of="$DEV" bs=1M oflag=direct status=none
stop_vdx
plain_open /tmp/c3.img /tmp/k1.bin 512 4096 vx3 --iv-large-sectors
cmp <(head -c 4M /dev/mapper/vx3) /tmp/c3.data || fail "dm-crypt --iv-large-sectors reads other bytes than vdx wrote"
plain_close vx3
echo "IV-LARGE-SECTORS-OK"
