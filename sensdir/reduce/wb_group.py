"""The sweep's W&B group: where the reduce's run goes and what its config says.

The jobs log to group ``wandb.group`` (default: ``run.name``, the sweep's name) of project
``wandb.project``; the reduce's run joins that group with ``job_type="reduce"``, read from the
jobs' resolved configs (the sweep folder's name where the configs do not say). Its config is
flat and has the same keys for every sweep (lists where a sweep varies a setting), never keys
made of job hashes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensdir.reduce.wb import PROJECT


@dataclass(frozen=True)
class SweepTarget:
    """Where the sweep's runs are: ``entity`` None means the key's default entity."""

    group: str
    project: str
    entity: str | None


def _unique(values: Iterable[Any]) -> str | None:
    found = {str(v) for v in values if v not in (None, "")}
    return found.pop() if len(found) == 1 else None


def _get(cfg: dict[str, Any], section: str, key: str) -> Any:
    sub = cfg.get(section)
    return sub.get(key) if isinstance(sub, dict) else None


def sweep_target(configs: Iterable[dict[str, Any]], sweep_dir: Path) -> SweepTarget:
    """The jobs' W&B group, project and entity, each where the jobs agree on one; else the
    sweep's ``run.name`` (or folder name), ``$WANDB_PROJECT`` (or ``sensdir``), ``$WANDB_ENTITY``."""
    configs = list(configs)
    group = _unique(_get(c, "wandb", "group") for c in configs)
    group = group or _unique(_get(c, "run", "name") for c in configs) or Path(sweep_dir).resolve().name
    project = _unique(_get(c, "wandb", "project") for c in configs) or os.environ.get("WANDB_PROJECT") or PROJECT
    entity = _unique(_get(c, "wandb", "entity") for c in configs) or os.environ.get("WANDB_ENTITY") or None
    return SweepTarget(group, project, entity)


def _sorted(values: Iterable[Any]) -> list[Any]:
    """The distinct values, numbers in order first, then the rest as strings."""
    found = {v if isinstance(v, (int, float, str)) else str(v) for v in values if v not in (None, "")}
    return sorted(v for v in found if not isinstance(v, str)) + sorted(v for v in found if isinstance(v, str))


def reduce_config(
    sweep_dir: Path, group: str, data: Any, comp: Any, settings: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """The reduce run's flat config (``data``: ``SweepData``, ``comp``: ``Completeness``)."""
    cfgs = list(data.configs.values())
    versions = provenance.get("versions") or {}
    return {
        "sweep": group,
        "sweep_dir": str(Path(sweep_dir).resolve()),
        "complete": comp.ok,
        "n_rows": data.n_rows,
        "n_jobs": len(data.configs),
        "n_shards": len(comp.shards),
        "allow_partial": settings.get("allow_partial"),
        "n_bootstrap": settings.get("n_bootstrap"),
        "bootstrap_seed": settings.get("seed"),
        "directions": _sorted(g.direction for g in data.groups),
        "schedules": _sorted(g.schedule for g in data.groups),
        "saes": _sorted(g.sae for g in data.groups),
        "hooks": _sorted(g.hook for g in data.groups),
        "studies": _sorted(_get(c, "study", "name") for c in cfgs),
        "models": _sorted(_get(c, "model", "name") for c in cfgs),
        "n_steps": _sorted(_get(c, "schedule", "n_steps") for c in cfgs),
        "n_prompts": _sorted(_get(c, "data", "n_prompts") for c in cfgs),
        "seeds": _sorted(_get(c, "run", "seed") for c in cfgs),
        "job_keys": sorted(data.configs),
        "git_commit": provenance.get("git_commit"),
        "git_dirty": provenance.get("git_dirty"),
        "host": provenance.get("host"),
        "python": provenance.get("python"),
        **{f"version_{pkg}": v for pkg, v in sorted(versions.items())},
    }
