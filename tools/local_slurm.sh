#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the tests and for a
# developer: Debian's slurm-wlm and munge, run as root.
#
#   tools/local_slurm.sh start STATE_DIR   writes STATE_DIR/slurm.conf for
#                                          this host, starts munged (unless
#                                          it runs), slurmctld and slurmd,
#                                          waits (at most 60 s) until the
#                                          node is idle
#   tools/local_slurm.sh stop STATE_DIR    stops what start started
#
# Then: SLURM_CONF=STATE_DIR/slurm.conf srun -N1 -n2 ...
# Everything it writes is in STATE_DIR (the configuration, the daemons'
# state, logs and pid files), except munged's own socket and pid file when
# it starts munged. The ports are chosen free at start. Exit status 3 and
# one line on stderr when Slurm cannot run here (not root, no package).
set -euo pipefail

cmd=${1:-}
state=${2:-}
if [[ -z "$cmd" || -z "$state" ]]; then
  echo "usage: $0 start|stop STATE_DIR" >&2
  exit 2
fi
mkdir -p "$state"
state=$(cd "$state" && pwd)

pids() {  # the pids a pid file names, if that process still runs
  for f in "$@"; do
    [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
  done
  return 0
}

stop() {
  local left jobs
  if [[ -n "$(pids "$state/slurmctld.pid")" ]]; then  # its jobs first
    jobs=$(SLURM_CONF="$state/slurm.conf" squeue -h -o %i 2>/dev/null || true)
    if [[ -n "$jobs" ]]; then
      SLURM_CONF="$state/slurm.conf" scancel $jobs 2>/dev/null || true
      for _ in $(seq 75); do  # at most 15 s
        [[ -z $(SLURM_CONF="$state/slurm.conf" squeue -h -o %i 2>/dev/null) ]] && break
        sleep 0.2
      done
    fi
  fi
  for f in "$state/slurmd.pid" "$state/slurmctld.pid" "$state/munged.pid"; do
    for p in $(pids "$f"); do kill -TERM "$p" 2>/dev/null || true; done
  done
  for _ in $(seq 50); do  # at most 10 s, then SIGKILL
    left=$(pids "$state/slurmd.pid" "$state/slurmctld.pid" "$state/munged.pid")
    [[ -z "$left" ]] && break
    sleep 0.2
  done
  for p in $(pids "$state/slurmd.pid" "$state/slurmctld.pid" "$state/munged.pid"); do
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -f "$state/slurmd.pid" "$state/slurmctld.pid" "$state/munged.pid"
}

if [[ "$cmd" == stop ]]; then
  stop
  exit 0
fi
if [[ "$cmd" != start ]]; then
  echo "usage: $0 start|stop STATE_DIR" >&2
  exit 2
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "local_slurm: not root: Slurm's daemons cannot be started" >&2
  exit 3
fi
for bin in slurmctld slurmd munged srun sinfo; do
  if ! command -v "$bin" >/dev/null; then
    echo "local_slurm: $bin not found (apt-get install slurm-wlm munge)" >&2
    exit 3
  fi
done

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}
host=$(hostname -s)
cpus=$(nproc)
mkdir -p "$state/ctld" "$state/spool"
cat > "$state/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=30
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$state/slurm.conf"

if ! munge -n >/dev/null 2>&1; then  # no working munged: start one
  mkdir -p /run/munge
  chown munge:munge /run/munge 2>/dev/null || true
  if [[ ! -s /etc/munge/munge.key ]]; then
    echo "local_slurm: /etc/munge/munge.key is missing" >&2
    exit 3
  fi
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged
  for _ in $(seq 50); do  # at most 10 s
    [[ -s /run/munge/munged.pid ]] && break
    sleep 0.2
  done
  cp /run/munge/munged.pid "$state/munged.pid"
fi

trap 'stop' ERR
slurmctld -i
slurmd
for _ in $(seq 300); do  # at most 60 s
  if [[ $(sinfo -h -o %T 2>/dev/null) == idle ]]; then
    echo "local_slurm: node $host idle (SLURM_CONF=$SLURM_CONF)"
    exit 0
  fi
  sleep 0.2
done
echo "local_slurm: the node did not come up within 60 s (see $state/*.log)" >&2
stop
exit 3
