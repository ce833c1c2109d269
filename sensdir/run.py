"""``python -m sensdir.run [-m] key=value ...``: compose the config, call ``run_job``.

In a multirun, ``run.shards=N`` given without ``run.shard`` sweeps every shard: ``-m
direction=a,b,c run.shards=2`` is six jobs (``run.shard=range(0,N)`` is added to the
overrides). With ``hydra/launcher=slurm`` each job is one task of a SLURM array.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sensdir.config import SensdirConfig, register_configs, to_config
from sensdir.errors import ConfigError, SensdirError
from sensdir.hydra_hooks import check_overrides, fail, register_resolvers
from sensdir.job import run_job
from sensdir.slurm_queue import install_watcher

log = logging.getLogger("sensdir")
register_resolvers()  # also in a SLURM task, which imports this module to run ``main``


def unknown_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys added with ``+key=value`` that no config dataclass has (e.g. ``+data.n_prompt``)."""
    out = []
    cls = OmegaConf.get_type(node)
    fields = {f.name for f in dataclasses.fields(cls)} if cls is not None and dataclasses.is_dataclass(cls) else None
    for key in map(str, node.keys()):
        if fields is not None and key not in fields:
            out.append(f"{prefix}{key}")
        elif OmegaConf.is_dict(node._get_node(key)):
            out += unknown_keys(node[key], f"{prefix}{key}.")
    return out


def compose_config(cfg: DictConfig) -> SensdirConfig:
    """``to_config`` with its failures (an unknown key, a value the schema rejects) as ConfigError."""
    try:
        return to_config(cfg)
    except (dataclasses.FrozenInstanceError, OmegaConfBaseException, TypeError, ValueError) as e:
        unknown = unknown_keys(cfg)
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(unknown)}; python -m sensdir.run --cfg job lists the valid ones"
            ) from e
        raise ConfigError(f"the composed config is invalid: {type(e).__name__}: {e}") from e


@hydra.main(config_path="conf", config_name="config", version_base=None)  # sensdir/conf, shipped in the package
def main(cfg: DictConfig) -> None:
    try:
        result = run_job(compose_config(cfg))
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
    refused = check_overrides(sys.argv[1:])
    if refused:
        fail(refused)
    sys.argv[1:] = expand_shards(sys.argv[1:])
    install_watcher()  # hydra/launcher=slurm: the driver sees tasks end without sacct too
    main()


if __name__ == "__main__":
    cli()
