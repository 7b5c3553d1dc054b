#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, from Debian's packages, for testing the
# batch job on a real scheduler (tests/slurm.rs).
#
#   sudo bash tools/slurm-local.sh up      # install (apt-get) + configure + start
#   sudo bash tools/slurm-local.sh status  # sinfo / squeue
#   sudo bash tools/slurm-local.sh down    # stop the daemons it started
#
# Needs root and Debian/Ubuntu (apt-get install slurm-wlm munge on first use). It writes
# /etc/slurm/slurm.conf (the previous one is kept as slurm.conf.before-tailor) and a munge
# key when none exists. Works without systemd: the daemons are started directly and
# stopped by the pids in their pid files. Process tracking is proctrack/linuxproc and
# tasks are not confined (no cgroups needed, e.g. in a container).
set -euo pipefail

RUN=/run/tailor-slurm
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "slurm-local.sh: must run as root (it installs packages and starts daemons)" >&2
        exit 2
    fi
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    echo "installing slurm-wlm and munge (apt-get)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
}

configure() {
    mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm "$RUN"
    chown -R slurm:slurm /var/lib/slurm /var/log/slurm 2>/dev/null || true
    if [ -f "$CONF" ] && ! grep -q '^# written by tailor' "$CONF"; then
        cp "$CONF" "$CONF.before-tailor"
    fi
    local cpus
    cpus=$(nproc)
    cat >"$CONF" <<EOF
# written by tailor tools/slurm-local.sh: a single-node test cluster
ClusterName=tailor-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$NODE CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    # Debian's slurm reads cgroup.conf only with cgroup plugins; none are used here.
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
}

alive() { # pidfile
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

up() {
    need_root
    install
    configure
    mkdir -p /run/munge && chown munge:munge /run/munge
    if ! alive /run/munge/munged.pid; then
        runuser -u munge -- /usr/sbin/munged
    fi
    if ! alive "$RUN/slurmctld.pid"; then
        /usr/sbin/slurmctld
    fi
    if ! alive "$RUN/slurmd.pid"; then
        /usr/sbin/slurmd
    fi
    # Ready when the node takes jobs.
    for _ in $(seq 1 60); do
        state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
        case "$state" in
        idle* | mix* | alloc*)
            echo "slurm is up: node $NODE ($(nproc) CPUs), partition debug"
            return 0
            ;;
        down* | drain*)
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
            ;;
        esac
        sleep 1
    done
    echo "slurm-local.sh: the node did not become ready; see /var/log/slurm/*.log" >&2
    sinfo >&2 || true
    exit 1
}

down() {
    need_root
    if alive "$RUN/slurmctld.pid"; then
        scancel --full --quiet --user=root 2>/dev/null || true
    fi
    for pidfile in "$RUN/slurmd.pid" "$RUN/slurmctld.pid" /run/munge/munged.pid; do
        if alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill "$pid"
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
        fi
    done
    echo "slurm is down"
}

status() {
    sinfo
    squeue
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
