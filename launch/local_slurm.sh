#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (root; apt-get install slurm-wlm munge), to try the
# sweep scripts by hand:
#
#   eval "$(launch/local_slurm.sh start | grep ^export)"     # or: launch/local_slurm.sh start [DIR]
#   launch/sweep.sh trial experiment=quickstart direction=real,random run.shards=2 \
#     hydra.launcher.partition=debug hydra.launcher.gres=null hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2
#   squeue; python -m sensdir.status results/trial
#   launch/local_slurm.sh stop [DIR]
#
# DIR (default /tmp/sensdir-slurm) holds slurm.conf, state, spool, logs and the daemons' pids.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PYTHON" -m sensdir.slurm_local "$@"
