"""The sweep-level plan: every job and shard a multirun will run, written before any starts.

A job's own plan (``shard-<i>-of-<n>.plan.json``) appears only once that job has started, so
a multirun interrupted before some of its jobs began would leave no trace of them. The
multirun therefore first writes ``<sweep>/plans/<hydra sweep folder name>.json`` (one per
multirun; ``sensdir.hydra_hooks`` writes it) listing each job's number, overrides, job key
and shard; ``sensdir.status``, the reduce and ``--allow-partial`` name the planned shards
that left no file at all as *never started*.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sensdir.artifacts.layout import ShardFiles, ShardId, sweep_plan_files, sweep_plan_path
from sensdir.artifacts.records import read_json, write_json_atomic


@dataclass(frozen=True)
class PlannedShard:
    job_key: str
    shard: int
    shards: int
    overrides: tuple[str, ...]
    plan_file: str  # the sweep plan that lists it
    job_num: int | None = None

    @property
    def name(self) -> str:
        return f"{self.job_key} shard {self.shard} of {self.shards}"

    def files(self, sweep_dir: Path) -> ShardFiles:
        return ShardFiles(Path(sweep_dir) / self.job_key, ShardId(self.shard, self.shards))

    def describe(self) -> str:
        return f"{self.name} (job #{self.job_num}: {' '.join(self.overrides) or 'no overrides'})"


def write_sweep_plan(sweep_dir: Path, sweep_id: str, jobs: list[dict[str, Any]], hydra_sweep_dir: str) -> Path:
    """``jobs``: ``{"job_num", "overrides", "job_key", "shard", "shards"}`` each (or ``"error"``
    in place of the key and shard where the job's config could not be composed)."""
    path = sweep_plan_path(sweep_dir, sweep_id)
    write_json_atomic(
        path,
        {
            "sweep_id": sweep_id,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "hydra_sweep_dir": hydra_sweep_dir,
            "n_jobs": len(jobs),
            "jobs": jobs,
        },
    )
    return path


def read_sweep_plans(sweep_dir: Path, sweep_id: str | None = None) -> tuple[list[PlannedShard], dict[str, str]]:
    """Every shard the sweep plans under ``sweep_dir`` list (once each), and the unreadable
    plans; only the plan of multirun ``sweep_id`` (its Hydra folder's name) if given."""
    out: dict[tuple[str, int, int], PlannedShard] = {}
    bad: dict[str, str] = {}
    for path in sweep_plan_files(sweep_dir):
        if sweep_id is not None and path.stem != sweep_id:
            continue
        plan = read_json(path)
        if plan is None or not isinstance(plan.get("jobs"), list):
            bad[str(path)] = "not a readable sweep plan (JSON with jobs)"
            continue
        for job in plan["jobs"]:
            try:
                ps = PlannedShard(
                    str(job["job_key"]),
                    int(job["shard"]),
                    int(job["shards"]),
                    tuple(str(o) for o in job.get("overrides", [])),
                    str(path),
                    job.get("job_num"),
                )
            except (KeyError, TypeError, ValueError):
                continue  # a job whose config did not compose: it fails on its own, with its message
            out.setdefault((ps.job_key, ps.shard, ps.shards), ps)
    return list(out.values()), bad


def never_started(sweep_dir: Path, sweep_id: str | None = None) -> list[PlannedShard]:
    """Planned shards that left no file (plan, Parquet or manifest) in their job folder."""
    planned, _ = read_sweep_plans(sweep_dir, sweep_id)
    out = []
    for ps in planned:
        files = ps.files(sweep_dir)
        if not any(p.exists() for p in (files.plan, files.parquet, files.manifest)):
            out.append(ps)
    return sorted(out, key=lambda p: (p.job_key, p.shard))
