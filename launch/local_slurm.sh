#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (root; apt-get install slurm-wlm munge), to try the
# sweep scripts by hand (README, "Trying it locally"):
#
#   eval "$(launch/local_slurm.sh start)"       # starts it (or reuses yours), sets SLURM_CONF
#   launch/sweep.sh trial hydra/launcher=slurm_local experiment=quickstart direction=real,random \
#     data.n_prompts=4 schedule.n_steps=20
#   squeue; python -m sensdir.status results/trial
#   launch/local_slurm.sh stop                  # stops this cluster, no other
#
#   launch/local_slurm.sh start|stop|check [DIR]
#
# start prints the export SLURM_CONF=... line on stdout, the node and a first sweep command on
# stderr. DIR holds slurm.conf, state, spool, logs, the daemons' pids and its owner; by default
# the user's own: $SENSDIR_SLURM_DIR, else $XDG_RUNTIME_DIR/sensdir-slurm, else
# ~/.cache/sensdir/slurm, else /tmp/sensdir-slurm-$USER (where that path is too long for the
# daemons' UNIX sockets, 107 bytes). A DIR whose cluster another user started is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PYTHON" -m sensdir.slurm_local "$@"
