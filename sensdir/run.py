"""``python -m sensdir.run [-m] key=value ...``: compose the config, call ``run_job``.

In a multirun, ``run.shards=N`` given without ``run.shard`` sweeps every shard: ``-m
direction=a,b,c run.shards=2`` is six jobs (``run.shard=range(0,N)`` is added to the
overrides). With ``hydra/launcher=slurm`` each job is one task of a SLURM array.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from sensdir.config import register_configs, to_config
from sensdir.errors import SensdirError
from sensdir.job import run_job

log = logging.getLogger("sensdir")


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        result = run_job(to_config(cfg))
    except SensdirError as e:
        log.error("%s", e)
        print(f"sensdir: error: {e}", file=sys.stderr)
        if os.environ.get("SUBMITIT_EXECUTOR"):
            # A submitit task (hydra/launcher=slurm): raising lets Hydra record the job as
            # failed and submitit store that result, so the sweep's driver and
            # ``python -m sensdir.status`` see this task's failure (sys.exit would leave no result).
            raise
        sys.exit(2)
    print(f"sensdir: results in {result.job_dir}")


_MULTIRUN_FLAGS = ("-m", "--multirun")


def expand_shards(argv: list[str]) -> list[str]:
    """Command-line arguments with ``run.shard=range(0,N)`` added where a multirun gives
    ``run.shards=N`` (N > 1) and no ``run.shard``; otherwise ``argv`` unchanged."""
    if not any(a in _MULTIRUN_FLAGS for a in argv) and "hydra.mode=MULTIRUN" not in argv:
        return argv
    shards, at = None, -1
    for i, a in enumerate(argv):
        key, sep, value = a.partition("=")
        key = key.lstrip("+~")
        if not sep:
            continue
        if key == "run.shard":
            return argv
        if key == "run.shards":
            shards, at = value.strip(), i
    if shards is None:
        return argv
    try:
        n = int(shards)
    except ValueError:
        raise SystemExit(
            f"sensdir: error: run.shards={shards} is not one number; when run.shards is swept, "
            "give run.shard too (e.g. run.shard=range(0,4))"
        ) from None
    # next to run.shards: Hydra's parser takes the overrides as one run of positional arguments
    return [*argv[: at + 1], f"run.shard=range(0,{n})", *argv[at + 1 :]] if n > 1 else argv


def cli() -> None:
    register_configs()
    sys.argv[1:] = expand_shards(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
