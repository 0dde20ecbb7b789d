#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian's slurm-wlm: slurmctld + slurmd + munge), for
# trying hydra/launcher=slurm, requeueing and multi-task jobs without a real cluster.
#
#   scripts/local_slurm.sh start     # idempotent: starts what is not running, waits until the node is idle
#   scripts/local_slurm.sh status    # exit 0 when the cluster answers; prints `export SLURM_CONF=...`
#   scripts/local_slurm.sh stop      # stops the daemons this script started (by their pid files)
#
# Everything lives under $HYLAB_SLURM_DIR (default /tmp/hylab-slurm): slurm.conf, a munge key and
# socket of its own, spool, state and logs. Client commands (sbatch, squeue, scontrol) find the
# cluster through SLURM_CONF=$HYLAB_SLURM_DIR/slurm.conf; when /etc/slurm/slurm.conf does not exist
# it is linked there too, so a plain `sbatch` works. Process tracking is proctrack/linuxproc and
# task/none (no cgroups inside a container). Needs root (slurmd starts jobs as their user).
set -euo pipefail

STATE=${HYLAB_SLURM_DIR:-/tmp/hylab-slurm}
CTLD_PORT=${HYLAB_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${HYLAB_SLURM_SLURMD_PORT:-6818}
CONF=$STATE/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf
MUNGE_SOCKET=$STATE/munge/munge.socket.2
export SLURM_CONF=$CONF

die() { echo "local_slurm: $*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

need_binaries() {
  local missing=()
  for b in munged slurmctld slurmd sbatch scontrol sinfo; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: apt-get install slurm-wlm munge"
  [ "$(id -u)" = 0 ] || die "slurmd must run as root (it starts jobs as their user); run this script as root"
}

write_conf() {
  mkdir -p "$STATE"/{ctld,spool,munge,log}
  chmod 700 "$STATE/munge"
  local node user
  # the node line as slurmd detects this machine (CPUs, sockets, cores, memory), less 1 GiB of memory
  node=$(PATH="$PATH:/usr/sbin" slurmd -C | head -1)
  node=$(echo "$node" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^RealMemory=/) { split($i, m, "="); $i = "RealMemory=" (m[2] > 2048 ? m[2] - 1024 : m[2]) } print}')
  user=$(id -un)
  cat >"$CONF.tmp" <<EOF
# written by scripts/local_slurm.sh: a one-node cluster on localhost
ClusterName=hylab
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
MinJobAge=600
KillWait=10
JobRequeue=1
PlugStackConfig=$STATE/plugstack.conf
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$STATE/plugstack.conf"
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  alive "$STATE/munged.pid" && return 0
  if [ ! -s "$STATE/munge/munge.key" ]; then
    head -c 1024 /dev/urandom >"$STATE/munge/munge.key"
    chmod 400 "$STATE/munge/munge.key"
  fi
  /usr/sbin/munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"
}

start() {
  need_binaries
  if status >/dev/null 2>&1; then
    echo "local_slurm: already running"; print_env; return 0
  fi
  # a stale pid file of a daemon that died must not be mistaken for a live one
  for d in slurmctld slurmd; do alive "$STATE/$d.pid" || rm -f "$STATE/$d.pid"; done
  write_conf
  start_munge
  alive "$STATE/slurmctld.pid" || /usr/sbin/slurmctld -f "$CONF"
  alive "$STATE/slurmd.pid" || /usr/sbin/slurmd -f "$CONF"
  if [ ! -e "$ETC_CONF" ] && [ -d "$(dirname "$ETC_CONF")" ]; then ln -s "$CONF" "$ETC_CONF"; fi
  for _ in $(seq 60); do
    if status >/dev/null 2>&1; then echo "local_slurm: started"; print_env; return 0; fi
    sleep 0.5
  done
  tail -n 20 "$STATE"/log/*.log >&2 || true
  die "the node did not become idle within 30 s (logs above, in $STATE/log)"
}

status() {
  [ -f "$CONF" ] || { echo "local_slurm: not configured ($CONF missing)"; return 1; }
  alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" || { echo "local_slurm: daemons not running"; return 1; }
  local state
  state=$(sinfo -h -o '%T' 2>/dev/null | head -1) || true
  case "$state" in
    idle*|mixed*|allocated*|completing*) sinfo -o '%P %D %T %c %m %N'; return 0 ;;
    *) echo "local_slurm: node state '${state:-no answer}'"; return 1 ;;
  esac
}

stop() {
  for d in slurmd slurmctld munged; do
    if alive "$STATE/$d.pid"; then
      kill "$(cat "$STATE/$d.pid")"
      for _ in $(seq 40); do alive "$STATE/$d.pid" || break; sleep 0.25; done
    fi
    rm -f "$STATE/$d.pid"
  done
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then rm -f "$ETC_CONF"; fi
  echo "local_slurm: stopped"
}

print_env() { echo "export SLURM_CONF=$CONF"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status && print_env ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
