#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests/test_slurm.py (Debian or Ubuntu, root).
#
#   bash tests/slurm/start_cluster.sh [DIR]     # DIR: config, state and logs (default /tmp/deepfake-workflow-slurm)
#
# Idempotent: installs slurmctld, slurmd, slurm-client and munge with apt-get only when missing,
# writes DIR/slurm.conf and DIR/gres.conf, starts munged, slurmctld and slurmd unless they already
# run, and waits until the node is idle. Prints one `started NAME PID` line per daemon it started:
# the caller stops those, and only those.
#
# Configless: slurmctld reads DIR/slurm.conf and slurmd fetches it into /run/slurm/conf/, where
# the SLURM commands (sbatch, squeue, and the srun inside each job) find it with no SLURM_CONF;
# the slurm executor plugin's jobs drop SLURM_CONF before their srun, so a cluster that needed it
# would fail there. /etc/slurm is not written; a machine with its own /etc/slurm/slurm.conf is
# refused (its commands would read that one first).
#
# Its shape: partitions `cpu` (default) and `gpu`, the names profiles/slurm/config.yaml uses;
# 4 fake GPUs (gres.conf File= links to /dev/null: SLURM hands them out and sets
# CUDA_VISIBLE_DEVICES, nothing uses them; train.device is cpu in the test); each core may be
# shared by 4 jobs (OverSubscribe=FORCE:4), so more jobs than cores run at once on the 2 cores,
# as in Snakemake's local runs.
set -euo pipefail

DIR=${1:-/tmp/deepfake-workflow-slurm}
CONF=$DIR/slurm.conf
NODE=$(hostname -s)
NGPUS=4

if [ "$(id -u)" != 0 ]; then
    echo "start_cluster.sh: needs root (it installs packages and starts daemons)" >&2
    exit 2
fi
if [ -e /etc/slurm/slurm.conf ]; then
    echo "start_cluster.sh: this machine has its own /etc/slurm/slurm.conf; not starting a test cluster beside it" >&2
    exit 2
fi

if [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/slurmd ] || [ ! -x /usr/sbin/munged ] || ! command -v sbatch >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # the daemon of pid file $1, and wait until it has gone (it saves its state first)
    if alive "$1"; then kill "$(cat "$1")"; fi
    for _ in $(seq 100); do alive "$1" || return 0; sleep 0.1; done
    echo "pid $(cat "$1") ($1) did not stop" >&2
    return 1
}

mkdir -p "$DIR"/{spool/ctld,spool/d,log,run,gpus} /run/munge
chown munge:munge /run/munge
chown slurm "$DIR/spool/ctld" "$DIR/log"
# slurmd wants a device file per GPU: links to /dev/null (what a job does with it is never checked)
for i in $(seq 0 $((NGPUS - 1))); do ln -sfn /dev/null "$DIR/gpus/gpu$i"; done
if [ ! -s /etc/munge/munge.key ]; then  # the package's postinst makes one; a stripped image may not have it
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
fi

# Memory: what the machine has, less 1 GiB, so slurmd never finds less than configured.
MEM_MB=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024))
CPUS=$(nproc)
NEW_CONF=$(cat <<EOF
ClusterName=deepfaketest
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmdSpoolDir=$DIR/spool/d
StateSaveLocation=$DIR/spool/ctld
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# Finished jobs stay listed for 10 min: the plugin's squeue status check and the test read them
MinJobAge=600
SlurmctldParameters=enable_configless
KillWait=5
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$NGPUS State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
EOF
)
NEW_GRES="NodeName=$NODE Name=gpu File=$DIR/gpus/gpu[0-$((NGPUS - 1))]"

changed=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$NEW_CONF" ]; then echo "$NEW_CONF" >"$CONF"; changed=1; fi
if [ "$(cat "$DIR/gres.conf" 2>/dev/null)" != "$NEW_GRES" ]; then echo "$NEW_GRES" >"$DIR/gres.conf"; changed=1; fi

# A changed config needs both SLURM daemons restarted (they compare their copies).
if [ $changed = 1 ]; then
    stop "$DIR/run/slurmd.pid"
    stop "$DIR/run/slurmctld.pid"
fi

# munged first: SLURM daemons started before it fail to authenticate for a while.
if ! alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do alive /run/munge/munged.pid && [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
    alive /run/munge/munged.pid || { echo "munged did not start" >&2; exit 1; }
    echo "started munged $(cat /run/munge/munged.pid)"
fi
for name in slurmctld slurmd; do
    if ! alive "$DIR/run/$name.pid"; then
        # both daemonise and write their pid file
        if [ $name = slurmctld ]; then
            /usr/sbin/slurmctld -f "$CONF"
        else  # it fetches the config from slurmctld: wait until that answers
            for _ in $(seq 100); do SLURM_CONF=$CONF timeout 2 scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
            SLURM_CONF=$CONF scontrol ping | grep -q UP || { echo "slurmctld does not answer; see $DIR/log/slurmctld.log" >&2; exit 1; }
            /usr/sbin/slurmd --conf-server localhost
        fi
        for _ in $(seq 50); do alive "$DIR/run/$name.pid" && break; sleep 0.1; done
        alive "$DIR/run/$name.pid" || { echo "$name did not start; see $DIR/log/$name.log" >&2; exit 1; }
        echo "started $name $(cat "$DIR/run/$name.pid")"
    fi
done

deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
    for name in slurmctld slurmd; do
        alive "$DIR/run/$name.pid" || { echo "$name stopped; see $DIR/log/$name.log" >&2; exit 1; }
    done
    state=$(SLURM_CONF=$CONF timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)
    case $state in
        idle | mixed | allocated) exit 0 ;;
        drain* | inval*) SLURM_CONF=$CONF scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
echo "node $NODE not idle after 60 s (state: ${state:-none}); see $DIR/log/" >&2
exit 1
