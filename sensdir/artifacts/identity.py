"""A job's identity: what it computes, hashed.

Settings that change how a job runs but not what it computes (where results go, progress
bars, which shard of the job, the device, the engine's batching) are left out, so moving a
sweep to another cluster or batch size finds its finished shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sensdir.config import SensdirConfig

NOT_IDENTITY = ("out_dir", "progress", "overwrite", "shard", "device")
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
    del d["engine"]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_label(cfg: SensdirConfig) -> str:
    """How results are grouped: the direction's (or study's) label."""
    return (cfg.study if cfg.study is not None else cfg.direction).label()


def job_key(cfg: SensdirConfig) -> str:
    return f"{job_label(cfg).replace(':', '-')}-{config_hash(cfg)[:10]}"


def job_dir(cfg: SensdirConfig) -> Path:
    return Path(cfg.run.out_dir) / cfg.run.name / job_key(cfg)


def row_id(jkey: str, shard: int, prompt_index: int, target_index: int) -> str:
    return f"{jkey}/s{shard}/p{prompt_index}/t{target_index}"
