"""The skeleton every job shares: validate → skip if complete → load → plan → rows → write.

A job's *task* (walks, or a study) knows what its rows are; the skeleton knows the files
(``sensdir.artifacts``): the plan before any compute, the Parquet shard, then the manifest
with the Parquet file's sha256. A shard is computed under its lock (a second identical run
waits, then skips it); a complete shard whose bytes no longer match its manifest is named and
recomputed; a write that fails (read-only folder, full disk) is an ``OutputError``. With
``wandb.mode`` set, the rows are logged to a W&B run as they come (``sensdir.job.wandb_log``),
which never fails the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import torch

from sensdir.artifacts.identity import config_dict, config_hash, job_dir, job_key
from sensdir.artifacts.layout import ShardFiles
from sensdir.artifacts.locks import shard_lock
from sensdir.artifacts.records import (
    complete_manifest,
    read_json,
    shard_problem,
    write_json_atomic,
    write_plan,
    write_table_atomic,
)
from sensdir.artifacts.schema import SCHEMA_VERSION
from sensdir.config import SensdirConfig
from sensdir.errors import OutputError, SensdirError
from sensdir.job.wandb_log import job_run
from sensdir.loading import check_site, load_model, load_sae, resolve_device
from sensdir.provenance import provenance
from sensdir.site import Site

log = logging.getLogger("sensdir")


@dataclass(frozen=True)
class JobResult:
    job_dir: Path
    shard_path: Path
    manifest_path: Path
    n_rows: int
    skipped: bool


@dataclass(frozen=True)
class Loaded:
    """What a task computes with, loaded once per job after the seed is set."""

    device: torch.device
    model: Any  # HookedTransformer
    sae: Any  # sae_lens SAE
    site: Site


class Task(Protocol):
    kind: str  # "walk" or the study's name: the shard metadata's ``kind``

    def plan(self) -> list[str]:
        """The row ids the shard will hold, known before any compute."""

    def batches(self) -> Iterator[dict[str, list]]:
        """The rows, a batch of columns at a time, in plan order."""

    def table(self, columns: dict[str, list], metadata: dict[str, Any]) -> pa.Table: ...

    def describe(self) -> dict[str, Any]:
        """Facts for the shard's metadata beyond the identity (e.g. the metric table)."""

    def record(self) -> dict[str, Any]:
        """Facts for the manifest about how the rows were computed (e.g. the engine path)."""


def load(cfg: SensdirConfig) -> Loaded:
    """Seed once, then the device, model, SAE and site (checked against each other)."""
    torch.manual_seed(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    model = load_model(cfg.model, device)
    sae = load_sae(cfg.sae, device)
    return Loaded(device, model, sae, check_site(model, sae, cfg.site.hook))


def _concat(batches: Iterator[dict[str, list]]) -> dict[str, list]:
    columns: dict[str, list] = {}
    for batch in batches:
        for key, values in batch.items():
            columns.setdefault(key, []).extend(values)
    return columns


def _skipped(files: ShardFiles) -> JobResult:
    n = (read_json(files.manifest) or {}).get("n_rows", 0)
    log.info("skip: %s is complete (%d rows)", files.parquet, n)
    return JobResult(files.job_dir, files.parquet, files.manifest, n, skipped=True)


def _done(cfg: SensdirConfig, files: ShardFiles, chash: str) -> bool:
    """Whether the shard is complete (its bytes checked against the manifest's sha256); a
    damaged one is named and recomputed."""
    if cfg.run.overwrite:
        return False
    problem = shard_problem(files, chash)
    if problem is not None and complete_manifest(files.manifest) is not None:
        log.warning("recomputing %s: %s", files.parquet, problem)
    return problem is None


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while writing results (read-only folder, full disk) is the user's to fix:
    one line naming the path, through ``OutputError``."""
    try:
        yield
    except OSError as e:
        if isinstance(e, SensdirError):
            raise
        where = e.filename or path
        raise OutputError(f"cannot write results to {where}: {e.strerror or e}") from e


def execute(cfg: SensdirConfig, make_task) -> JobResult:
    """Run ``make_task(cfg, loaded, job_key)``'s rows into this job's shard (or skip it)."""
    t0, started = time.perf_counter(), datetime.now(timezone.utc).isoformat()
    chash, jkey = config_hash(cfg), job_key(cfg)
    files = ShardFiles.of(job_dir(cfg), cfg.run.shard, cfg.run.shards)
    if _done(cfg, files, chash):
        return _skipped(files)
    loaded = load(cfg)
    task = make_task(cfg, loaded, jkey)  # may still reject the input: nothing is written before
    with ExitStack() as stack:
        with _writing(files.lock):
            stack.enter_context(shard_lock(files.lock))
        if _done(cfg, files, chash):  # an identical run finished it while this one waited
            return _skipped(files)
        return _compute(cfg, files, loaded, task, (t0, started))


def _compute(cfg: SensdirConfig, files: ShardFiles, loaded: Loaded, task: Task, start: tuple[float, str]) -> JobResult:
    chash, jkey = config_hash(cfg), job_key(cfg)
    row_ids = task.plan()
    with _writing(files.plan):
        write_plan(files, jkey, chash, row_ids)
    t_plan = time.perf_counter()
    with job_run(cfg, loaded.site.hook, len(row_ids)) as wb:  # a no-op unless wandb.mode is set
        columns = _concat(wb.observe(task.batches()))
        got = columns.get("row_id", [])
        if sorted(got) != sorted(row_ids):
            raise RuntimeError(
                f"{task.kind} job {jkey} computed rows {sorted(set(got) ^ set(row_ids))[:5]} it did not plan (or missed them)"
            )
        manifest = _write_shard(cfg, files, loaded, task, columns, (*start, t_plan))
        wb.finish(manifest)
    log.info("wrote %d rows (%s) -> %s", len(row_ids), jkey, files.parquet)
    return JobResult(files.job_dir, files.parquet, files.manifest, len(row_ids), skipped=False)


def _write_shard(
    cfg: SensdirConfig, files: ShardFiles, loaded: Loaded, task: Task, columns: dict[str, list], times: tuple[float, str, float]
) -> dict[str, Any]:
    """The Parquet shard, then its manifest (returned)."""
    t0, started, t_plan = times
    t_rows = time.perf_counter()
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": task.kind,
        "config_hash": config_hash(cfg),
        "job_key": job_key(cfg),
        "seed": cfg.run.seed,
        "config": config_dict(cfg),
        **task.describe(),
    }
    table = task.table(columns, meta)
    with _writing(files.parquet):
        digest = write_table_atomic(files.parquet, table)
    t_end = time.perf_counter()
    timings = {"prepare": t_plan - t0, "rows": t_rows - t_plan, "write": t_end - t_rows, "total": t_end - t0}
    manifest = {
        **meta,
        "status": "complete",
        "n_rows": len(columns.get("row_id", [])),
        "shard": cfg.run.shard,
        "shards": cfg.run.shards,
        "parquet": files.parquet.name,
        **digest,
        "provenance": provenance(),
        "device": str(loaded.device),
        **task.record(),
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "timings_s": timings,
    }
    with _writing(files.manifest):
        write_json_atomic(files.manifest, manifest)
    return manifest


def run_job(cfg: SensdirConfig) -> JobResult:
    from sensdir.job.study import StudyTask
    from sensdir.job.walks import WalkTask
    from sensdir.validate import validate_study, validate_walks

    if cfg.study is not None:
        entry = validate_study(cfg)
        return execute(cfg, lambda c, loaded, jkey: StudyTask(c, loaded, jkey, entry.impl))
    schedule = validate_walks(cfg)
    return execute(cfg, lambda c, loaded, jkey: WalkTask(c, loaded, jkey, schedule))
