#!/usr/bin/env bash
# [LH24] single-latent walks on GPT-2 small at blocks.6: 7 SAEs x 1000 prompts, 4 shards each = 28 array tasks.
# Extra overrides go to every task, e.g. the cluster's resources:
#   launch/lh24_feature_l0.sh hydra.launcher.partition=gpu hydra.launcher.gres=gpu:a100:1 hydra.launcher.account=my_project
# Same as: python -m sensdir.run -m hydra/launcher=slurm experiment=lh24_feature_l0 run.shards=4 [overrides], then the reduce
# of results/lh24_feature_l0 as a dependent job (launch/sweep.sh).
exec "$(dirname "$0")/sweep.sh" lh24_feature_l0 experiment=lh24_feature_l0 run.shards=4 "$@"
