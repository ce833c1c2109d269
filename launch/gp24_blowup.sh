#!/usr/bin/env bash
# [GP24] Fig. 2-3 on GPT-2 small: 5 direction types x 1000 prompts x 100 steps, 8 shards per type = 40 array tasks.
# Extra overrides go to every task, e.g. the cluster's resources:
#   launch/gp24_blowup.sh hydra.launcher.partition=gpu hydra.launcher.gres=gpu:a100:1 hydra.launcher.account=my_project
# Same as: python -m sensdir.run -m hydra/launcher=slurm experiment=gp24_blowup run.shards=8 [overrides], then the reduce
# of results/gp24_blowup as a dependent job (launch/sweep.sh).
exec "$(dirname "$0")/sweep.sh" gp24_blowup experiment=gp24_blowup run.shards=8 "$@"
