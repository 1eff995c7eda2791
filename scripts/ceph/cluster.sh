#!/bin/bash
# A one-node Ceph cluster for tests: one mon, one OSD, no mgr, bound to
# 127.0.0.1 only (see ../shared/reference/ceph-probe.md).
#
#   cluster.sh start DIR       make DIR/ceph.conf, DIR/keyring, pool "rbd"; prints timing
#   cluster.sh stop DIR        stop the daemons (SIGTERM, then SIGKILL), keep DIR
#   cluster.sh osd-stop DIR    stop the OSD: bluestore: the process ends (SIGTERM, then
#                              SIGKILL); memstore: frozen (SIGSTOP), see below
#   cluster.sh osd-start DIR   start it again (bluestore) or let it run (memstore: SIGCONT)
#
# CEPH_OBJECTSTORE=memstore (default: fastest, data in RAM) or bluestore (on a
# sparse file in DIR; its data survives an OSD restart). A memstore OSD is
# frozen rather than killed because it keeps PGs in RAM only: restarted, it
# comes back empty (checked: "load_pgs opened 0 pgs").
#
# DIR must be writable (inside the test guest: a tmpfs path; the host root is
# shared read-only there). Ports: CEPH_MON_V2_PORT (3300), CEPH_MON_V1_PORT (6789),
# so a host cluster and a guest cluster can differ. Must run as root.
set -euo pipefail

cmd=${1:-}
DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || { echo "usage: $0 start|stop|osd-stop|osd-start DIR" >&2; exit 2; }
V2=${CEPH_MON_V2_PORT:-3300}
V1=${CEPH_MON_V1_PORT:-6789}
STORE=${CEPH_OBJECTSTORE:-memstore}
case $STORE in memstore|bluestore) ;; *) echo "cluster.sh: CEPH_OBJECTSTORE=$STORE: use memstore or bluestore" >&2; exit 2 ;; esac
export CEPH_CONF=$DIR/ceph.conf

now() { date +%s.%N; }
say() { echo "cluster.sh: $*"; }

# pid of a daemon from its pid file, only if that process still is the daemon
# (pid files go stale and pids are reused).
daemon_pid() { # name comm
  local f=$DIR/run/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] || return 1
  echo "$pid"
}

stop_daemon() { # name comm
  local pid i
  pid=$(daemon_pid "$1" "$2") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 0
    sleep 0.1
  done
  say "$1 ignored SIGTERM for 5 s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 0
    sleep 0.1
  done
}

start_osd() {
  ceph-osd -i 0 </dev/null >>"$DIR/log/osd.0.stderr" 2>&1
  local i
  # Ready when the mon reports it up and every PG is active.
  for i in $(seq 1 300); do
    if ceph osd dump 2>/dev/null | grep -q '^osd.0 up'; then return 0; fi
    sleep 0.1
  done
  say "osd.0 did not come up"; return 1
}

case $cmd in
start)
  t0=$(now)
  mkdir -p "$DIR/run" "$DIR/log"
  if daemon_pid mon.a ceph-mon >/dev/null; then say "a mon already runs in $DIR"; exit 1; fi
  rm -rf "$DIR/mon.a" "$DIR/osd.0"
  fsid=$(uuidgen)
  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$V2,v1:127.0.0.1:$V1]
public_network = 127.0.0.1/32
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = $DIR/keyring
run_dir = $DIR/run
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
paxos_propose_interval = 0.1
auth_allow_insecure_global_id_reclaim = false
mgr_initial_modules =
# Replicated pools only: no erasure-code plugin is preloaded (jerasure's gf-complete dies on
# an illegal instruction under QEMU TCG's CPU in the test guest).
osd_erasure_code_plugins =
[mon]
mon_data = $DIR/\$name
[osd]
osd_data = $DIR/\$name
$(if [ "$STORE" = bluestore ]; then
    printf '%s\n' 'osd_objectstore = bluestore' "bluestore_block_path = $DIR/\$name/block.file" 'bluestore_block_create = true' \
      "bluestore_block_size = ${CEPH_BLUESTORE_BYTES:-4294967296}" 'bluestore_fsck_on_mkfs = false' 'bluestore_fsck_on_mount = false'
  else
    printf '%s\n' 'osd_objectstore = memstore' "memstore_device_bytes = ${CEPH_MEMSTORE_BYTES:-2147483648}"
  fi)
EOF
  K=$DIR/keyring
  ceph-authtool --create-keyring "$K" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$K" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$K" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$V2,v1:127.0.0.1:$V1]" "$DIR/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$DIR/monmap" --keyring "$K"
  ceph-mon -i a </dev/null >>"$DIR/log/mon.a.stderr" 2>&1
  t1=$(now)
  uuid=$(uuidgen)
  id=$(ceph osd new "$uuid")
  [ "$id" = 0 ] || { say "unexpected osd id $id"; exit 1; }
  mkdir -p "$DIR/osd.0"
  ceph-osd -i 0 --mkfs --osd-uuid "$uuid" 2>/dev/null
  start_osd
  t2=$(now)
  ceph osd pool create rbd >/dev/null 2>&1
  rbd pool init rbd
  t3=$(now)
  awk -v d="$DIR" -v a="$t0" -v b="$t1" -v c="$t2" -v e="$t3" -v s="$STORE" \
    'BEGIN { printf "cluster.sh: ready in %s (%s): mon %.1f s, osd %.1f s, pool %.1f s; CEPH_CONF=%s/ceph.conf\n", d, s, b - a, c - b, e - c, d }'
  ;;
stop)
  pid=$(daemon_pid osd.0 ceph-osd) && kill -CONT "$pid" 2>/dev/null || true
  stop_daemon osd.0 ceph-osd
  stop_daemon mon.a ceph-mon
  ;;
osd-stop)
  pid=$(daemon_pid osd.0 ceph-osd) || { say "osd.0 is not running"; exit 1; }
  if grep -q '^osd_objectstore = bluestore' "$DIR/ceph.conf"; then stop_daemon osd.0 ceph-osd
  else kill -STOP "$pid"; fi
  ;;
osd-start)
  if grep -q '^osd_objectstore = bluestore' "$DIR/ceph.conf"; then
    if daemon_pid osd.0 ceph-osd >/dev/null; then say "osd.0 already runs"; exit 0; fi
    start_osd
  else
    pid=$(daemon_pid osd.0 ceph-osd) || { say "osd.0 is not running"; exit 1; }
    kill -CONT "$pid"
  fi
  ;;
*)
  echo "usage: $0 start|stop|osd-stop|osd-start DIR" >&2; exit 2 ;;
esac
