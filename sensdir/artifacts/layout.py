"""File names of a sweep: ``<sweep>/<job key>/shard-<i>-of-<n>.<plan.json|parquet|manifest.json>``,
the shard's lock ``shard-<i>-of-<n>.lock`` beside them, and the multiruns' sweep-level plans
``<sweep>/plans/<hydra sweep folder name>.json``.

The one place that spells or parses these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_STEM = re.compile(r"^shard-(\d+)-of-(\d+)$")
PLAN, PARQUET, MANIFEST, LOCK = ".plan.json", ".parquet", ".manifest.json", ".lock"
SWEEP_PLANS = "plans"  # <sweep>/plans/<hydra sweep folder name>.json: every job a multirun will run
# Folders of a sweep that hold no jobs: Hydra's logs, the reduce's outputs, the sweep plans.
NOT_JOBS = ("hydra", "reduce", SWEEP_PLANS)


@dataclass(frozen=True, order=True)
class ShardId:
    shard: int
    shards: int

    @property
    def stem(self) -> str:
        return f"shard-{self.shard:05d}-of-{self.shards:05d}"

    @classmethod
    def parse(cls, name: str) -> ShardId | None:
        """The shard a file name belongs to (any of its three files), or None."""
        m = _STEM.match(name.split(".", 1)[0])
        return cls(int(m.group(1)), int(m.group(2))) if m else None

    def siblings(self) -> list[ShardId]:
        """Every shard of the same job."""
        return [ShardId(i, self.shards) for i in range(self.shards)]


@dataclass(frozen=True)
class ShardFiles:
    """The three files of one shard of one job."""

    job_dir: Path
    id: ShardId

    @classmethod
    def of(cls, job_dir: Path, shard: int, shards: int) -> ShardFiles:
        return cls(Path(job_dir), ShardId(shard, shards))

    @property
    def plan(self) -> Path:
        return self.job_dir / f"{self.id.stem}{PLAN}"

    @property
    def parquet(self) -> Path:
        return self.job_dir / f"{self.id.stem}{PARQUET}"

    @property
    def manifest(self) -> Path:
        return self.job_dir / f"{self.id.stem}{MANIFEST}"

    @property
    def lock(self) -> Path:
        return self.job_dir / f"{self.id.stem}{LOCK}"


def sweep_plan_path(sweep_dir: Path, sweep_id: str) -> Path:
    return Path(sweep_dir) / SWEEP_PLANS / f"{sweep_id}.json"


def sweep_plan_files(sweep_dir: Path) -> list[Path]:
    return sorted((Path(sweep_dir) / SWEEP_PLANS).glob("*.json"))


def shard_files_in(job_dir: Path, suffix: str) -> dict[ShardId, Path]:
    """The files with ``suffix`` (``PLAN``, ``PARQUET``, ``MANIFEST``) of a job folder, by shard."""
    out = {}
    for p in sorted(Path(job_dir).glob(f"shard-*{suffix}")):
        sid = ShardId.parse(p.name)
        if sid is not None and p.name == f"{sid.stem}{suffix}":
            out[sid] = p
    return out


def is_job_dir(d: Path) -> bool:
    return any(shard_files_in(d, s) for s in (PLAN, PARQUET, MANIFEST))


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job folders, or the sweep folder itself when it is a single job's."""
    sweep_dir = Path(sweep_dir)
    jobs = sorted(
        d for d in sweep_dir.iterdir() if d.is_dir() and d.name not in NOT_JOBS and not d.name.startswith(".") and is_job_dir(d)
    )
    if not jobs and is_job_dir(sweep_dir):
        jobs = [sweep_dir]
    return jobs
