#!/usr/bin/env bash
# [G24]/[LH24] SAE-error pathology on GPT-2 small at blocks.6: 4 direction types x 7 SAEs x 1000 prompts, 2 shards each = 56 array tasks.
# Extra overrides go to every task, e.g. the cluster's resources:
#   launch/g24_error_pathology.sh hydra.launcher.partition=gpu hydra.launcher.gres=gpu:a100:1 hydra.launcher.account=my_project
# Same as: python -m sensdir.run -m hydra/launcher=slurm experiment=g24_error_pathology run.shards=2 [overrides], then the reduce
# of results/g24_error_pathology as a dependent job (launch/sweep.sh).
exec "$(dirname "$0")/sweep.sh" g24_error_pathology experiment=g24_error_pathology run.shards=2 "$@"
