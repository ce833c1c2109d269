"""Every check of a config that needs no model, in one place, before anything is loaded or
written: plugin names and config types, schedule against direction, metrics, ranges.

A failure is a ``ConfigError`` naming the setting; the entry point prints it as one line.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import TYPE_CHECKING, Any

from sensdir.errors import ConfigError
from sensdir.registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from sensdir.config import SensdirConfig
    from sensdir.schedules.base import Schedule


def _entry(group: str, registry: Registry, sub: Any):
    try:
        entry = registry.get(sub.name)
    except UnknownNameError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(sub, entry.config_cls):
        raise ConfigError(f"{group} {sub.name!r} needs a {entry.config_cls.__name__}, got {type(sub).__name__}")
    return entry


def _check_choices(cfg: SensdirConfig) -> None:
    """Settings typed as a ``Choice`` hold one of its values (Hydra checks this at composition;
    configs built in Python are checked here)."""
    from sensdir.config import Choice

    for section in dataclasses.fields(cfg):
        sub = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(sub):
            continue
        for name, hint in typing.get_type_hints(type(sub)).items():
            if isinstance(hint, type) and issubclass(hint, Choice):
                value = getattr(sub, name)
                if value not in hint.values():
                    valid = ", ".join(hint.values())
                    raise ConfigError(f"{section.name}.{name}={value!r} is not valid; valid choices: {valid}")


_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_BOUND_OK = {"ge": lambda v, b: v >= b, "gt": lambda v, b: v > b, "le": lambda v, b: v <= b, "lt": lambda v, b: v < b}


def _check_number(name: str, value: Any, bounds: dict[str, float | None]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is not a finite number")
    for kind, bound in bounds.items():
        if bound is not None and not _BOUND_OK[kind](value, bound):
            raise ConfigError(f"{name}={value!r} is out of range: it must be {_BOUND_TEXT[kind]} {bound}")


def check_numbers(cfg: Any, prefix: str = "") -> None:
    """Every numeric setting finite and inside the range its field declares
    (``sensdir.config.bounded``), in every section and plugin config."""
    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_numbers(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                _check_number(f"{name}[{i}]", v, {})
        else:
            _check_number(name, value, f.metadata.get("bounds", {}))


def _check_run(cfg: SensdirConfig) -> None:
    run, eng = cfg.run, cfg.engine
    if run.shards < 1 or not 0 <= run.shard < run.shards:
        raise ConfigError(f"run.shard must be in 0..run.shards-1, got shard={run.shard} shards={run.shards}")
    if run.n_targets < 1 or eng.batch_size < 1 or eng.logits_mb <= 0:
        raise ConfigError("run.n_targets, engine.batch_size and engine.logits_mb must be positive")
    if cfg.site.positions == "all" and eng.path not in ("auto", "full"):
        raise ConfigError(f"site.positions=all perturbs every position and runs engine.path=full, not {eng.path!r}")


def _check_metrics(cfg: SensdirConfig) -> None:
    from sensdir.metrics import METRICS

    if not cfg.metric.names:
        raise ConfigError("metric.names is empty; valid choices: " + ", ".join(METRICS.names()))
    for name in cfg.metric.names:
        try:
            METRICS.get(name)
        except UnknownNameError as e:
            raise ConfigError(f"metric.names: {e}") from None


def validate_study(cfg: SensdirConfig):
    """The study's registry entry, checked."""
    from sensdir.studies import STUDIES

    entry = _entry("study", STUDIES, cfg.study)
    if cfg.sae.source == "none":
        raise ConfigError(f"study {cfg.study.name!r} studies an SAE; sae.source=none gives it none")
    _check_choices(cfg)
    check_numbers(cfg)
    if cfg.run.shards != 1:
        raise ConfigError(f"study {cfg.study.name!r} runs as one job; drop run.shards={cfg.run.shards}")
    return entry


def validate_walks(cfg: SensdirConfig) -> Schedule:
    """The built schedule, once the config has passed every check."""
    from sensdir.directions import DIRECTIONS
    from sensdir.schedules import SCHEDULES

    direction = _entry("direction", DIRECTIONS, cfg.direction)
    _entry("schedule", SCHEDULES, cfg.schedule)
    try:
        schedule = SCHEDULES.build(cfg.schedule)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    returns = direction.impl.returns_for(cfg.direction)
    direction.impl.check_job(cfg)
    if cfg.sae.source == "none" and direction.impl.uses_sae(cfg.direction):
        free = ", ".join(e.name for e in DIRECTIONS.entries() if not e.impl.uses_sae(e.config_cls()))
        raise ConfigError(f"direction {cfg.direction.label()!r} reads the SAE, and sae.source=none; types that need none: {free}")
    if returns not in schedule.accepts:
        able = ", ".join(e.name for e in SCHEDULES.entries() if returns in e.impl.accepts)
        raise ConfigError(
            f"direction {cfg.direction.name!r} gives a {returns}, which schedule {cfg.schedule.name!r} cannot walk; schedules that can: {able}"
        )
    _check_choices(cfg)
    check_numbers(cfg)
    _check_metrics(cfg)
    _check_run(cfg)
    return schedule
