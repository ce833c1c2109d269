"""Opt-in W&B run per job (``wandb.mode=online|offline``, default ``disabled``).

Each job (one shard) opens a run in group ``wandb.group`` (default: the sweep's name,
``run.name``; the reduce joins the same group) with ``job_type`` = the direction's label (or
the study's), flat config keys (``model``, ``sae_id``, ``direction``, ``n_steps``, ``shard``,
``job_key``, ...), and logs as the row batches complete:

- ``rows_done``, ``fraction_done``, ``rows_per_s``;
- ``stats/<summary>_mean``, ``_median``, ``_censored_fraction`` over the rows so far (e.g.
  ``stats/ms_step_kl_mean``), plotted against ``rows_done``;
- ``live/<metric>_mean_curve``: a line plot of the per-step mean curve over the rows so far.

At the end, after the shard and its manifest are written: the final per-step mean curves as
``curve/<metric>_mean`` (and ``curve/grid_mean``) against ``walk_step``, and the summaries
(``rows``, the ``stats/*`` values, ``wall_time_s``, ``timings_s/*``). A study logs its table.

W&B never costs a shard: any W&B failure is one warning line and the job goes on without it
(an online run that cannot start is tried offline first). ``WANDB_DISABLED=true`` or
``WANDB_MODE=disabled`` turn the runs off, ``WANDB_MODE=offline`` makes online runs offline.
Offline runs go under ``$WANDB_DIR/wandb/`` or else ``<run.out_dir>/<run.name>/wandb/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sensdir.artifacts.identity import config_hash, job_key, job_label, sweep_dir
from sensdir.config import SensdirConfig

log = logging.getLogger("sensdir")

LIVE_CURVE_S = 30.0  # the live curve plots are redrawn at most this often (and after the last batch)


def effective_mode(mode: str) -> str:
    """``wandb.mode`` as the environment lets it run: disabled, offline or online."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if str(mode) == "disabled" or env == "disabled":
        return "disabled"
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        return "disabled"
    return "offline" if env in ("offline", "dryrun") else str(mode)


def wandb_group(cfg: SensdirConfig) -> str:
    return cfg.wandb.group or str(cfg.run.name)


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v if v is None or isinstance(v, (bool, int, float)) else str(v)


def _options(prefix: str, sub: Any) -> dict[str, Any]:
    """A plugin config's own fields as flat keys (``direction_anchor_cos``, ...)."""
    if sub is None or not is_dataclass(sub):
        return {}
    return {f"{prefix}_{f.name}": _plain(getattr(sub, f.name)) for f in fields(sub) if f.name != "name"}


def flat_config(cfg: SensdirConfig, hook: str) -> dict[str, Any]:
    """The job's W&B config: flat keys, the same for every job of a kind (``hook``: the resolved site)."""
    sae_release, sae_id = cfg.sae.described()
    walks = cfg.study is None
    return {
        "sweep": str(cfg.run.name),
        "job_key": job_key(cfg),
        "config_hash": config_hash(cfg),
        "kind": "walk" if walks else "study",
        "direction": cfg.direction.label() if walks else None,
        "direction_type": cfg.direction.name if walks else None,
        "study": None if walks else cfg.study.name,
        "schedule": cfg.schedule.name if walks else None,
        "n_steps": cfg.schedule.n_steps if walks else None,
        "model": cfg.model.name,
        "sae_release": sae_release,
        "sae_id": sae_id,
        "hook": hook,
        "positions": str(cfg.site.positions),
        "n_prompts": cfg.data.n_prompts,
        "n_ctx": cfg.data.n_ctx,
        "n_targets": cfg.run.n_targets,
        "data_source": str(cfg.data.source),
        "seed": cfg.run.seed,
        "shard": cfg.run.shard,
        "shards": cfg.run.shards,
        "metrics": list(cfg.metric.names),
        "ms_threshold": cfg.metric.ms_threshold,
        "plateau_l2": cfg.metric.plateau_l2,
        "plateau_rule": str(cfg.metric.plateau_rule),
        "engine_path": str(cfg.engine.path),
        "batch_size": cfg.engine.batch_size,
        "experiment": cfg.experiment,
        **(_options("direction", cfg.direction) if walks else _options("study", cfg.study)),
        **(_options("schedule", cfg.schedule) if walks else {}),
    }


def _floats(rows: list) -> np.ndarray:
    """Curves (lists, null where a step was dropped) as a [rows, steps] array with NaN."""
    k = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), k), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = [np.nan if v is None else v for v in r]
    return out


class RunningStats:
    """Per-step sums and counts of the curves, and every row's summaries, over the rows so far."""

    def __init__(self, curves: list[str], summaries: dict[str, str | None]):
        self.curve_names = curves
        self.summaries = summaries  # summary column -> its censored column (or None)
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.values: dict[str, list] = {c: [] for c in [*summaries, *(v for v in summaries.values() if v)]}
        self.rows = 0

    def add(self, batch: dict[str, list]) -> None:
        self.rows += len(batch.get("row_id", []))
        for name in self.curve_names:
            if name not in batch:
                continue
            x = _floats(batch[name])
            ok = np.isfinite(x)
            s, c = np.where(ok, x, 0.0).sum(0), ok.sum(0)
            old_s, old_c = self.sums.get(name, np.zeros(0)), self.counts.get(name, np.zeros(0, dtype=np.int64))
            k = max(len(s), len(old_s))
            self.sums[name] = np.pad(old_s, (0, k - len(old_s))) + np.pad(s, (0, k - len(s)))
            self.counts[name] = np.pad(old_c, (0, k - len(old_c))) + np.pad(c, (0, k - len(c)))
        for col, values in self.values.items():
            values.extend(v for v in batch.get(col, []) if v is not None)

    def curve(self, name: str) -> np.ndarray:
        """The per-step mean over the rows so far (NaN where no row has the step)."""
        s, c = self.sums.get(name, np.zeros(0)), self.counts.get(name, np.zeros(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    def scalars(self) -> dict[str, float]:
        """``stats/<column>_mean``, ``_median`` and ``_censored_fraction`` of the rows so far."""
        out: dict[str, float] = {}
        for col, censored in self.summaries.items():
            v = np.asarray(self.values[col], dtype=float)
            if len(v):
                out[f"stats/{col}_mean"], out[f"stats/{col}_median"] = float(v.mean()), float(np.median(v))
            if censored and self.values[censored]:
                out[f"stats/{col}_censored_fraction"] = float(np.mean(self.values[censored]))
        return out


def _summary_columns(cfg: SensdirConfig, grid_kind: str | None) -> dict[str, str | None]:
    """Each metric's summary columns (those meant for this walk's grid) -> their censored column."""
    from sensdir.metrics import METRICS

    out: dict[str, str | None] = {}
    for name in cfg.metric.names:
        for s in METRICS.get(name).impl.summaries:
            if s.grid_kinds is None or grid_kind is None or grid_kind in s.grid_kinds:
                out[s.column] = s.censored_column
    return out


def _jsonable(v: Any) -> Any:
    """A table cell W&B takes: scalars as they are (non-finite floats as null), the rest as JSON."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return json.dumps(v, default=str)


class JobRun:
    """A job's W&B run; every method is a no-op without one (disabled, or after a failure)."""

    def __init__(self, run: Any, cfg: SensdirConfig, n_planned: int):
        self.run, self.cfg, self.n_planned = run, cfg, n_planned
        self.t0 = time.perf_counter()
        self.stats: RunningStats | None = None
        self.study_columns: dict[str, list] = {}
        self.last_curve = -math.inf

    def _guard(self, what: str, fn, *args) -> None:
        if self.run is None:
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - W&B must never fail a job
            log.warning("W&B: %s failed (%s: %s); the job goes on without W&B", what, type(e).__name__, e)
            self.close(exit_code=1)

    def observe(self, batches: Iterator[dict[str, list]]) -> Iterator[dict[str, list]]:
        """``batches`` unchanged, each logged once it is computed."""
        for batch in batches:
            self._guard("logging a batch", self._log_batch, batch)
            yield batch

    def _log_batch(self, batch: dict[str, list]) -> None:
        if self.cfg.study is not None:
            for key, values in batch.items():
                self.study_columns.setdefault(key, []).extend(values)
        if self.stats is None:
            self.stats = self._new_stats(batch)
        self.stats.add(batch)
        rows, dt = self.stats.rows, time.perf_counter() - self.t0
        data: dict[str, Any] = {
            "rows_done": rows,
            "fraction_done": rows / max(self.n_planned, 1),
            "rows_per_s": rows / max(dt, 1e-9),
        }
        data.update(self.stats.scalars())
        if self.cfg.study is None and (time.perf_counter() - self.last_curve >= LIVE_CURVE_S or rows >= self.n_planned):
            data.update(self._curve_plots())
            self.last_curve = time.perf_counter()
        self.run.log(data)

    def _new_stats(self, batch: dict[str, list]) -> RunningStats:
        if self.cfg.study is not None:
            return RunningStats([], {})
        grid_kind = (batch.get("grid_kind") or [None])[0]
        return RunningStats([*self.cfg.metric.names, "grid"], _summary_columns(self.cfg, grid_kind))

    def _curve_plots(self) -> dict[str, Any]:
        import wandb

        assert self.stats is not None
        grid = self.stats.curve("grid")
        out = {}
        for name in self.cfg.metric.names:
            y = self.stats.curve(name)
            data = [[k, _jsonable(float(grid[k])) if k < len(grid) else None, _jsonable(float(v))] for k, v in enumerate(y)]
            table = wandb.Table(columns=["walk_step", "grid_mean", f"{name}_mean"], data=data)
            title = f"{self.cfg.direction.label()}: mean {name} per step ({self.stats.rows} rows)"
            out[f"live/{name}_mean_curve"] = wandb.plot.line(table, "walk_step", f"{name}_mean", title=title)
        return out

    def finish(self, manifest: dict[str, Any]) -> None:
        """The final curves and summaries, then the run's end (the shard is written by now)."""
        self._guard("logging the job's summary", self._log_end, manifest)
        self.close(exit_code=0)

    def _log_end(self, manifest: dict[str, Any]) -> None:
        stats = self.stats or RunningStats([], {})
        if self.cfg.study is None:
            curves = {name: stats.curve(name) for name in [*self.cfg.metric.names, "grid"]}
            for k in range(max((len(c) for c in curves.values()), default=0)):
                row = {f"curve/{n}_mean": float(c[k]) for n, c in curves.items() if k < len(c) and np.isfinite(c[k])}
                self.run.log({"walk_step": k, **row})
        else:
            self._log_study_table()
        timings = manifest.get("timings_s") or {}
        summary = {
            "rows": int(manifest.get("n_rows", stats.rows)),
            **stats.scalars(),
            "wall_time_s": timings.get("total", time.perf_counter() - self.t0),  # the job's, loading included
            **{f"timings_s/{k}": v for k, v in timings.items()},
            "device": manifest.get("device"),
            "engine": (manifest.get("engine") or {}).get("path"),
            "parquet_sha256": manifest.get("parquet_sha256"),
        }
        self.run.summary.update({k: v for k, v in summary.items() if v is not None})

    def _log_study_table(self) -> None:
        import wandb

        cols = [c for c in self.study_columns if c not in ("row_id", "job_key")]
        n = len(next(iter(self.study_columns.values()), []))
        data = [[_jsonable(self.study_columns[c][i]) for c in cols] for i in range(n)]
        columns: list[str | int] = list(cols)
        self.run.log({"study_table": wandb.Table(columns=columns, data=data)})

    def close(self, exit_code: int) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:  # noqa: BLE001
            log.warning("W&B: finishing the run failed (%s: %s)", type(e).__name__, e)


def _init(mode: str, cfg: SensdirConfig, hook: str) -> Any:
    import wandb

    where = Path(os.environ.get("WANDB_DIR") or sweep_dir(cfg))
    where.mkdir(parents=True, exist_ok=True)
    try:
        timeout = max(0.1, float(os.environ.get("SENSDIR_WANDB_INIT_TIMEOUT", 30.0)))
    except ValueError:
        timeout = 30.0
    settings = wandb.Settings(console="off", save_code=False, disable_git=True, init_timeout=timeout)
    run = wandb.init(
        mode=mode,  # type: ignore[arg-type]  # online or offline
        dir=str(where),
        project=cfg.wandb.project or os.environ.get("WANDB_PROJECT") or "sensdir",
        entity=cfg.wandb.entity,
        group=wandb_group(cfg),
        job_type=job_label(cfg),
        name=f"{job_key(cfg)}-shard-{cfg.run.shard}-of-{cfg.run.shards}",
        tags=list(cfg.wandb.tags) or None,
        config=flat_config(cfg, hook),
        settings=settings,
        reinit="create_new",
    )
    run.define_metric("rows_done")
    run.define_metric("stats/*", step_metric="rows_done")
    run.define_metric("walk_step")
    run.define_metric("curve/*", step_metric="walk_step")
    return run


def open_run(cfg: SensdirConfig, hook: str, n_planned: int) -> JobRun:
    """The job's run in ``cfg.wandb.mode`` (as the environment lets it), or a no-op one."""
    mode = effective_mode(cfg.wandb.mode)
    if mode == "disabled":
        return JobRun(None, cfg, n_planned)
    for attempt in ("online", "offline") if mode == "online" else ("offline",):
        try:
            return JobRun(_init(attempt, cfg, hook), cfg, n_planned)
        except Exception as e:  # noqa: BLE001 - W&B must never fail a job
            then = "trying offline" if attempt == "online" else "the job goes on without W&B"
            log.warning("W&B: the %s run could not start (%s: %s); %s", attempt, type(e).__name__, e, then)
    return JobRun(None, cfg, n_planned)


@contextmanager
def job_run(cfg: SensdirConfig, hook: str, n_planned: int) -> Iterator[JobRun]:
    """``open_run`` for the block that computes and writes the shard; a block that raises
    ends the run as failed (exit code 1) and the error goes on."""
    run = open_run(cfg, hook, n_planned)
    try:
        yield run
    except BaseException:
        run.close(exit_code=1)
        raise
    run.close(exit_code=0)
