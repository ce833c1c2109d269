#!/usr/bin/env bash
# [GP24] plateaus on GPT-2 small: 4 starting points x 1000 prompts, absolute steps of 0.5, 8 shards each = 32 array tasks.
# Extra overrides go to every task, e.g. the cluster's resources:
#   launch/gp24_plateau.sh hydra.launcher.partition=gpu hydra.launcher.gres=gpu:a100:1 hydra.launcher.account=my_project
# Same as: python -m sensdir.run -m hydra/launcher=slurm experiment=gp24_plateau run.shards=8 [overrides], then the reduce
# of results/gp24_plateau as a dependent job (launch/sweep.sh).
exec "$(dirname "$0")/sweep.sh" gp24_plateau experiment=gp24_plateau run.shards=8 "$@"
