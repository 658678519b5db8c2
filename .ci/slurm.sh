# A throwaway one-node SLURM cluster on this machine, for the tests in tests/cluster/.
# Source it, then `slurm_start` (installs Debian's slurm-wlm and munge if missing,
# starts munged, slurmctld and slurmd, waits for the node to be idle and exports
# SLURM_CONF) and, at the end, `slurm_stop` (stops all three and removes the folder).
# Everything lives in one temporary folder: key, config, state, spool, logs, sockets.
# Runs as root (SlurmUser=root), as CI does.

SLURM_TMP=""

slurm_install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm munge
}

# A free TCP port on 127.0.0.1 (the kernel picks it; nothing listens on it afterwards).
slurm_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

slurm_logs() {
    local log
    for log in "$SLURM_TMP"/log/*.log; do
        [ -f "$log" ] || continue
        echo "--- $log (last 40 lines)"
        tail -n 40 "$log"
    done
}

slurm_start() {
    slurm_install
    SLURM_TMP=$(mktemp -d /tmp/entropic-slurm.XXXXXX)
    local t=$SLURM_TMP host cpus mem
    mkdir -p "$t/munge" "$t/state" "$t/spool" "$t/log" "$t/run"
    chmod 700 "$t/munge"

    # munge: a fresh key and a daemon of our own on a private socket.
    mungekey --create --keyfile="$t/munge/munge.key" --force
    chmod 400 "$t/munge/munge.key"
    munged --key-file="$t/munge/munge.key" --socket="$t/munge/munge.socket" \
        --pid-file="$t/run/munged.pid" --log-file="$t/log/munged.log" \
        --seed-file="$t/munge/munge.seed" --force \
        || { slurm_logs; echo "munged did not start"; return 1; }

    # The node as slurmd sees it: its short hostname, CPUs and memory.
    host=$(hostname -s)
    cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n1)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
    cat >"$t/slurm.conf" <<EOF
ClusterName=entropic-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$t/munge/munge.socket
SlurmctldPort=$(slurm_free_port)
SlurmdPort=$(slurm_free_port)
StateSaveLocation=$t/state
SlurmdSpoolDir=$t/spool
SlurmctldPidFile=$t/run/slurmctld.pid
SlurmdPidFile=$t/run/slurmd.pid
SlurmctldLogFile=$t/log/slurmctld.log
SlurmdLogFile=$t/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# Look at pending jobs every second: a released requeued job starts at once, not in 30 s.
SchedulerParameters=bf_interval=1,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
# Up to 4 jobs share each CPU, so an array's tasks and a Dask cluster's jobs run together.
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
EOF
    export SLURM_CONF="$t/slurm.conf"

    slurmctld -i || { slurm_logs; echo "slurmctld did not start"; return 1; }
    slurmd || { slurm_logs; echo "slurmd did not start"; return 1; }

    local deadline=$((SECONDS + 60)) state=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)
        [ "$state" = "idle" ] && break
        sleep 1
    done
    if [ "$state" != "idle" ]; then
        slurm_logs
        echo "SLURM node $host is not idle after 60 s (state: ${state:-none})"
        return 1
    fi
    echo "SLURM up: node $host, $cpus CPUs, ${mem} MB, config $SLURM_CONF"
}

slurm_stop() {
    [ -n "$SLURM_TMP" ] && [ -d "$SLURM_TMP" ] || return 0
    local t=$SLURM_TMP name pid
    scancel --quiet --full --user=root 2>/dev/null || true
    for name in slurmd slurmctld munged; do
        pid=$(cat "$t/run/$name.pid" 2>/dev/null || true)
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for name in slurmd slurmctld munged; do
        pid=$(cat "$t/run/$name.pid" 2>/dev/null || true)
        [ -n "$pid" ] || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$t"
    SLURM_TMP=""
}
