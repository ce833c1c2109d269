"""A job's identity: what it computes, hashed.

Settings that change how a job runs but not what it computes (where results go, progress
bars, which shard of the job, the device, the engine's batching, W&B logging) are left out, so
moving a sweep to another cluster or batch size, or logging it to W&B, finds its finished shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sensdir.config import SensdirConfig

NOT_IDENTITY = ("out_dir", "progress", "overwrite", "shard", "device")
NOT_IDENTITY_SECTIONS = ("engine", "wandb")  # how a job runs and reports, not what it computes
_PLUGIN_GROUPS = ("direction", "schedule", "study")


def config_dict(cfg: SensdirConfig) -> dict[str, Any]:
    """The resolved config as plain data; plugin sections carry their dataclass name."""
    d = dataclasses.asdict(cfg)
    for group in _PLUGIN_GROUPS:
        sub = getattr(cfg, group)
        if sub is not None:
            d[group] = {"_type": type(sub).__name__, **d[group]}
    return d


def config_hash(cfg: SensdirConfig) -> str:
    d = config_dict(cfg)
    d["run"] = {k: v for k, v in d["run"].items() if k not in NOT_IDENTITY}
    for section in NOT_IDENTITY_SECTIONS:
        d.pop(section, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_label(cfg: SensdirConfig) -> str:
    """How results are grouped: the direction's (or study's) label."""
    return (cfg.study if cfg.study is not None else cfg.direction).label()


def job_key(cfg: SensdirConfig) -> str:
    return f"{job_label(cfg).replace(':', '-')}-{config_hash(cfg)[:10]}"


def name_problem(name: str) -> str | None:
    """Why ``run.name`` would put files outside ``run.out_dir`` (or nowhere), or None. Any
    other name is fine, unicode and spaces included; ``a/b`` nests inside out_dir."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name.strip() or name.strip() in (".", "./"):
        return "is empty"
    if "\0" in name:
        return "contains a NUL character"
    if PurePosixPath(name).is_absolute() or Path(name).is_absolute():
        return "is an absolute path"
    if ".." in parts:
        return "contains '..'"
    return None


def sweep_dir(cfg: SensdirConfig) -> Path:
    """``<run.out_dir>/<run.name>``; a name that would leave ``run.out_dir`` is a ConfigError."""
    from sensdir.errors import ConfigError

    why = name_problem(str(cfg.run.name))
    if why is not None:
        raise ConfigError(
            f"run.name={cfg.run.name!r} {why}: it must be a relative name inside run.out_dir "
            f"(e.g. run.name=my_sweep; set run.out_dir to write elsewhere)"
        )
    return Path(cfg.run.out_dir) / cfg.run.name


def job_dir(cfg: SensdirConfig) -> Path:
    return sweep_dir(cfg) / job_key(cfg)


def row_id(jkey: str, shard: int, prompt_index: int, target_index: int) -> str:
    return f"{jkey}/s{shard}/p{prompt_index}/t{target_index}"
