# A disk the host made at run time over JSON-RPC: fio verify, a measured fio
# read for the metrics check, then one long fio read while the host creates and
# deletes exports in alternate phases. Markers in $VDX_RUN pace the two sides;
# the guest's own /sys/block/vda/stat counts the reads of each phase.
. "$VDX_SRC/test/e2e/guest/lib.sh"
DEV=/dev/vda
wait_until 20 test -b $DEV || fail "$DEV did not appear"
bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh"

# mark NAME; await NAME: hand a step to the host and wait for its answer.
mark() { touch "$VDX_RUN/$1"; }
await() { wait_until "${2:-60}" test -e "$VDX_RUN/$1" || fail "host never wrote $1"; }
randread() { # randread NAME SECONDS
  fio --name="$1" --filename=$DEV --rw=randread --bs=4k --ioengine=libaio --iodepth=8 --direct=1 \
    --time_based --runtime="$2" --output-format=json >"$VDX_RUN/fio-$1.json" 2>/tmp/fio-$1.err
}

mark scrape-1; await scraped-1
randread counted 6 || { cat /tmp/fio-counted.err; fail "fio counted failed"; }
step "fio counted done"
mark scrape-2; await scraped-2

# Phases of PHASE_S seconds, churn off and on in turn (quiet first and last, so
# every churn phase has a quiet one either side), over one fio run; each
# line of phases.txt: phase, churn on/off, reads completed, time in ns.
PHASES=${PHASES:-19}; PHASE_S=${PHASE_S:-2}
# fio runs until the phases are over (each phase takes PHASE_S and a little more
# under TCG), then is stopped with SIGTERM, which ends it cleanly with its report
# (sent to fio itself: a background job of a script ignores SIGINT).
randread churn 600 &
FIO=$!
sleep 2
reads() { awk '{ print $1 }' /sys/block/vda/stat; }
: >"$VDX_RUN/phases.txt"
for p in $(seq 1 "$PHASES"); do
  if [ $((p % 2)) = 0 ]; then mark "on-$p"; state=on; else state=off; fi
  echo "$p $state $(reads) $(date +%s%N)" >>"$VDX_RUN/phases.txt"
  sleep "$PHASE_S"
  [ $state = on ] && mark "off-$p"
done
echo "end end $(reads) $(date +%s%N)" >>"$VDX_RUN/phases.txt"
mark churn-done
pkill -TERM -f -- '--name=churn '
wait $FIO || true
grep -q '"error" : 0' "$VDX_RUN/fio-churn.json" || { cat /tmp/fio-churn.err "$VDX_RUN/fio-churn.json"; fail "fio during the churn failed"; }
step "fio during the churn done"
mark delete-try; await delete-tried
echo "MANAGED-DISK-OK"
