#!/usr/bin/env bash
# The quickstart sweep (embedded model) on SLURM: 3 direction types x 2 shards = 6 array tasks.
# A CPU partition will do: launch/quickstart.sh hydra.launcher.partition=cpu hydra.launcher.gres=null
exec "$(dirname "$0")/sweep.sh" quickstart experiment=quickstart direction=real,random,synth_struct run.shards=2 "$@"
