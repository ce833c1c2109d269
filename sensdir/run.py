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

from sensdir.config import register_configs
from sensdir.errors import HubUnreachableError, SensdirError
from sensdir.hydra_hooks import check_overrides, compose_config, fail, register_resolvers
from sensdir.job import JobResult, run_job
from sensdir.slurm_queue import install_watcher

log = logging.getLogger("sensdir")
register_resolvers()  # also in a SLURM task, which imports this module to run ``main``


@hydra.main(config_path="conf", config_name="config", version_base=None)  # sensdir/conf, shipped in the package
def main(cfg: DictConfig) -> None:
    try:
        result = _run(cfg)
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


def _task_overrides() -> list[str]:
    """This job's overrides as Hydra recorded them (in a multirun: with this job's sweep values)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # HydraConfig not set: main called outside Hydra
        return [a for a in sys.argv[1:] if not a.startswith("-")]


def _run(cfg: DictConfig) -> JobResult:
    """Compose, check that every resource the job loads is here when offline (one error naming
    all the missing ones, ``sensdir.resources``), run the job."""
    from sensdir.resources import preflight, widen

    config = compose_config(cfg)
    overrides = _task_overrides()
    preflight(config, overrides)
    try:
        return run_job(config)
    except HubUnreachableError as e:  # the hub unreachable without HF_HUB_OFFLINE: name all
        raise widen(e, config, overrides) from None


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
    refused = check_overrides(sys.argv[1:])
    if refused:
        fail(refused)
    sys.argv[1:] = expand_shards(sys.argv[1:])
    install_watcher()  # hydra/launcher=slurm: the driver sees tasks end without sacct too
    main()


if __name__ == "__main__":
    cli()
