# A disk the host made at run time over JSON-RPC: fio verify, then 4 KiB random
# reads measured before, during and after the host creates and deletes exports
# (markers in $VDX_RUN pace the two sides; fio's JSON lands there for the host).
. "$VDX_SRC/test/e2e/guest/lib.sh"
DEV=/dev/vda
wait_until 20 test -b $DEV || fail "$DEV did not appear"
bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh"

# mark NAME; await NAME: hand a step to the host and wait for its answer.
mark() { touch "$VDX_RUN/$1"; }
await() { wait_until "${2:-60}" test -e "$VDX_RUN/$1" || fail "host never wrote $1"; }

rate() {
  fio --name="$1" --filename=$DEV --rw=randread --bs=4k --ioengine=libaio --iodepth=8 --direct=1 \
    --time_based --runtime="${SECS:-8}" --output-format=json >"$VDX_RUN/fio-$1.json" 2>/tmp/fio-$1.err \
    || { cat /tmp/fio-$1.err; fail "fio $1 failed"; }
  step "fio $1 done"
}

mark scrape-1; await scraped-1
rate base1
mark scrape-2; await scraped-2
mark churn-start; await churning
rate churn
mark churn-stop; await churn-stopped 120
rate base2
mark delete-try; await delete-tried
echo "MANAGED-DISK-OK"
