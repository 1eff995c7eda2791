# One-off (a record of how vduse-guest.md was made, not a tool): profile vdx's
# VDUSE export in the bench guest. Put in place of scripts/bench/guest-vduse.sh.
. "$VDX_SRC/test/e2e/guest/lib.sh"
PROF=/tmp/prof
mkdir -p $PROF
truncate -s 256M /tmp/b.img
node --cpu-prof --cpu-prof-interval 500 --cpu-prof-dir $PROF "$VDX_SRC/dist/cli/main.js" serve \
  --bdev file:name=d0,path=/tmp/b.img --export vduse:bdev=d0,name=vduse0,num-queues=1,bus=none \
  --rpc-socket /run/vdx-p.sock --log-format json >"$VDX_RUN/vdx-p.log" 2>&1 &
PID=$!
wait_until 60 test -e /dev/vduse/vduse0 || { cat "$VDX_RUN/vdx-p.log"; fail "no vduse"; }
vdpa dev add name vduse0 mgmtdev vduse
wait_until 30 vdpa_block vduse0 || fail "no block device"
dev=$(vdpa_block vduse0)
fio --name=b --filename="$dev" --rw=randread --bs=4k --iodepth=32 --ioengine=libaio --direct=1 \
  --time_based --runtime=10 --size=256M --output-format=terse --terse-version=3 >/tmp/f.out 2>&1
echo "BENCH vdx-vduse $(awk -F';' '{print $8}' /tmp/f.out)"
vdpa dev del vduse0
kill -INT $PID; wait $PID
cat > /tmp/sum.mjs <<'JS'
import { readdirSync, readFileSync } from 'node:fs';
const dir = process.argv[2];
for (const f of readdirSync(dir)) {
  const p = JSON.parse(readFileSync(`${dir}/${f}`, 'utf8'));
  const dt = new Map();
  for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  const self = new Map(); let tot = 0;
  for (const n of p.nodes) { const t = dt.get(n.id) ?? 0; tot += t; const k = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/dist/').pop()}:${n.callFrame.lineNumber}`; self.set(k, (self.get(k) ?? 0) + t); }
  console.log(`PROF ${f} ${(tot / 1e6).toFixed(2)} s`);
  for (const [k, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 18)) console.log(`PROF ${(100 * t / tot).toFixed(1)} % ${k}`);
}
JS
node /tmp/sum.mjs $PROF
exit 1
