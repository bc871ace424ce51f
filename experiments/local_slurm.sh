#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (Debian's slurm-wlm, slurmdbd and munge, MariaDB for the
# accounting that sacct and submitit read, run as root), for running the submitit launcher through real sbatch,
# requeue, time limits and scancel as a cluster does them.
#
#   experiments/local_slurm.sh up      # installs slurm-wlm, slurmdbd, munge and mariadb-server if missing, writes
#                                      # the configs, starts munged, MariaDB, slurmdbd, slurmctld and slurmd, waits
#                                      # until the node is idle
#   experiments/local_slurm.sh down    # stops what `up` started (by PID) and removes its state and config
#   experiments/local_slurm.sh status
#
# The config: this host's CPUs and memory, one partition `cpu`, select/cons_tres, JobRequeue=1, no cgroups
# (proctrack/linuxproc: it runs in containers). It is written to /etc/slurm/slurm.conf when that file does not
# exist (then sinfo, sbatch and submitit find it without SLURM_CONF), else to STATE/slurm.conf: export
# SLURM_CONF=STATE/slurm.conf. STATE (default /var/tmp/dno-slurm) holds the PIDs, spool, logs. Idempotent.
set -euo pipefail
STATE="${STATE:-/var/tmp/dno-slurm}"
HOST="$(hostname -s)"

installed() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null &&
    command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null
}

conf_path() { cat "$STATE/conf_path" 2>/dev/null || echo ""; }

running() { [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; }

write_conf() {
  local cpus mem conf
  cpus="$(nproc)"
  mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"  # MB, a tenth kept for the system
  if [ ! -e /etc/slurm/slurm.conf ] || grep -q "^# written by experiments/local_slurm.sh" /etc/slurm/slurm.conf; then
    conf=/etc/slurm/slurm.conf
  else
    conf="$STATE/slurm.conf"
  fi
  mkdir -p "$(dirname "$conf")" "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/log"
  cat > "$conf" <<EOF
# written by experiments/local_slurm.sh: a one-node cluster on $HOST
ClusterName=dno
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobRequeue=1
KillWait=30
MinJobAge=300
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  echo "$conf" > "$STATE/conf_path"
  cat > "$(dirname "$conf")/slurmdbd.conf" <<EOF
# written by experiments/local_slurm.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=dno-local
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
  chmod 600 "$(dirname "$conf")/slurmdbd.conf"
}

start_accounting() {
  # MariaDB with its data in STATE, then slurmdbd on it: sacct (and submitit, which polls it) see the jobs
  mkdir -p /run/mysqld
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --user=root --datadir="$STATE/mysql" --auth-root-authentication-method=normal \
      >"$STATE/log/mariadb-install.log" 2>&1
  fi
  mariadbd --user=root --datadir="$STATE/mysql" --socket=/run/mysqld/mysqld.sock --skip-networking \
    --pid-file="$STATE/mariadbd.pid" >"$STATE/log/mariadbd.log" 2>&1 &
  for _ in $(seq 120); do mariadb -uroot -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.5; done
  mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' \
    IDENTIFIED BY 'dno-local'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  slurmdbd
  for _ in $(seq 120); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 0.5; done
  sacctmgr -i add cluster dno >/dev/null 2>&1 || true
}

up() {
  if ! installed; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server >/dev/null
  fi
  mkdir -p "$STATE"
  if running; then
    echo "already up ($(conf_path))"
    return
  fi
  write_conf
  export SLURM_CONF="$(conf_path)"
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    echo /etc/munge/munge.key > "$STATE/munge_key_created"
  fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  if ! munge -n >/dev/null 2>&1; then
    munged --force --pid-file="$STATE/munged.pid" 2>"$STATE/log/munged.err" || munged --force
    [ -f "$STATE/munged.pid" ] || pgrep -n munged > "$STATE/munged.pid"
  fi
  start_accounting
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  for _ in $(seq 120); do
    state="$(sinfo -h -o %t 2>/dev/null | head -1)"
    [ "$state" = "idle" ] && { echo "up: $HOST idle, $(nproc) CPUs (SLURM_CONF=$SLURM_CONF)"; return; }
    sleep 0.5
  done
  echo "the node did not become idle (state: ${state:-none}); logs in $STATE/log" >&2
  exit 1
}

down() {
  local conf
  conf="$(conf_path)"
  for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    if [ -f "$STATE/$daemon.pid" ]; then
      pid="$(cat "$STATE/$daemon.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [ -n "$conf" ] && [ -f "$conf" ] && grep -q "^# written by experiments/local_slurm.sh" "$conf"; then
    rm -f "$conf" "$(dirname "$conf")/slurmdbd.conf"
  fi
  [ -f "$STATE/munge_key_created" ] && rm -f "$(cat "$STATE/munge_key_created")"
  rm -rf "$STATE"
  echo "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) running && { echo "up"; SLURM_CONF="$(conf_path)" sinfo; } || echo "down" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
