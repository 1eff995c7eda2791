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

# Phases of PER_PHASE windows of WINDOW_S seconds, churn off and on in turn
# (quiet first and last), over one fio run; each line of phases.txt: phase,
# churn on/off, reads completed, time in ns. The sampler forks nothing (a read
# of the stat file, $EPOCHREALTIME, and a timed read of a fifo nobody writes as
# its sleep): under TCG each fork costs fio tens of milliseconds of its vCPU.
PHASES=${PHASES:-65}; PER_PHASE=${PER_PHASE:-6}; WINDOW_S=${WINDOW_S:-0.2}
# fio runs until the phases are over, then is stopped with SIGTERM, which ends
# it cleanly with its report (sent to fio itself: a background job of a script
# ignores SIGINT).
randread churn 600 &
FIO=$!
sleep 2
mkfifo /tmp/nap
exec 9<>/tmp/nap
sample() { # sample PHASE STATE
  local r _
  read -r r _ </sys/block/vda/stat
  echo "$1 $2 $r ${EPOCHREALTIME/./}000" >>"$VDX_RUN/phases.txt"
}
: >"$VDX_RUN/phases.txt"
for ((p = 1; p <= PHASES; p++)); do
  if ((p % 2 == 0)); then : >"$VDX_RUN/on-$p"; state=on; else state=off; fi
  for ((w = 0; w < PER_PHASE; w++)); do
    sample $p $state
    read -r -t "$WINDOW_S" -u 9 || true
  done
  [ $state = on ] && : >"$VDX_RUN/off-$p"
done
sample end end
mark churn-done
pkill -TERM -f -- '--name=churn '
wait $FIO || true
grep -q '"error" : 0' "$VDX_RUN/fio-churn.json" || { cat /tmp/fio-churn.err "$VDX_RUN/fio-churn.json"; fail "fio during the churn failed"; }
step "fio during the churn done"
mark delete-try; await delete-tried
echo "MANAGED-DISK-OK"
