"""Completeness of a sweep: planned rows (plan files) against present rows (readable shards).

A sweep directory holds one subdirectory per job (``<direction>-<hash>/``); each job writes
``shard-<i>-of-<n>.plan.json`` before compute, then the ``.parquet`` shard and, last, its
``.manifest.json`` (docs/shards.md). Only the Parquet files that complete manifests name are
read (``sensdir.artifacts.shards``), each checked first against its manifest's size and
sha256, then on its own (footer, required columns, row count); a file that fails is reported
by path and what failed, and its rows count as missing. Any other Parquet file in a job folder
is reported as foreign, a shard's file without a complete manifest as unfinished. Planned rows
are the union of the plans' ``row_ids``; a job whose plans say ``shards: n`` is expected to
have shards ``0..n-1`` even where a plan file is gone; shards that a multirun's sweep plan
lists but that left no file at all are reported as never started, by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from sensdir.artifacts.layout import ShardFiles, ShardId, find_job_dirs
from sensdir.artifacts.records import kind_of, metadata_of_schema, read_json
from sensdir.artifacts.schema import required_columns
from sensdir.artifacts.shards import scan_job
from sensdir.artifacts.sweep_plan import never_started, read_sweep_plans

# How many ids of each kind the report lists in full; the counts are always exact.
MAX_LISTED = 50


@dataclass
class ShardFile:
    path: Path
    job_dir: Path
    stem: str
    n_rows: int
    manifest: dict[str, Any] | None
    kind: str = "walk"  # "walk", or the name of the study that wrote the shard


@dataclass
class Completeness:
    """What was planned, what is there, and what is wrong, by file where it is a file."""

    sweep_dir: Path
    job_dirs: list[Path] = field(default_factory=list)
    shards: list[ShardFile] = field(default_factory=list)  # readable Parquet files
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # job_key -> first complete manifest
    n_planned: int = 0
    n_present: int = 0  # distinct row ids in readable files
    missing_shards: list[str] = field(default_factory=list)  # expected shard paths with no Parquet file
    corrupt_files: dict[str, str] = field(default_factory=dict)  # path -> why it is unreadable or damaged
    truncated_files: dict[str, str] = field(default_factory=dict)  # path -> rows found vs the manifest's
    unfinished_files: list[str] = field(default_factory=list)  # Parquet without a complete manifest
    foreign_files: dict[str, str] = field(default_factory=dict)  # Parquet files no manifest or plan names
    never_started: list[str] = field(default_factory=list)  # shards of a sweep plan that left no file
    bad_plans: dict[str, str] = field(default_factory=dict)
    n_missing_rows: int = 0
    missing_rows: list[str] = field(default_factory=list)  # first MAX_LISTED
    n_duplicated_rows: int = 0  # row ids seen more than once
    duplicated_rows: dict[str, list[str]] = field(default_factory=dict)  # row id -> files, first MAX_LISTED
    n_unplanned_rows: int = 0
    # row id -> the one file whose copy is used; the other copies are skipped by the reader.
    duplicate_owner: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.missing_shards
            or self.corrupt_files
            or self.truncated_files
            or self.unfinished_files
            or self.foreign_files
            or self.never_started
            or self.bad_plans
            or self.n_missing_rows
            or self.n_duplicated_rows
        )

    def problems(self) -> list[str]:
        """One human-readable line per problem, files named."""
        out = [f"missing shard (no Parquet file): {p}" for p in self.missing_shards]
        out += [f"corrupt or truncated shard (unreadable): {p}: {why}" for p, why in self.corrupt_files.items()]
        out += [f"truncated shard: {p}: {why}" for p, why in self.truncated_files.items()]
        out += [f"shard without a complete manifest (not read): {p}" for p in self.unfinished_files]
        out += [f"foreign Parquet file (not read): {p}: {why}" for p, why in self.foreign_files.items()]
        never = "never started or failed before planning (listed by the sweep plan, no file written)"
        out += [f"{never}: {d}" for d in self.never_started]
        out += [f"unreadable plan: {p}: {why}" for p, why in self.bad_plans.items()]
        if self.n_missing_rows:
            shown = ", ".join(self.missing_rows[:5]) + (", ..." if self.n_missing_rows > 5 else "")
            out.append(f"{self.n_missing_rows} planned row(s) missing: {shown}")
        if self.n_duplicated_rows:
            shown = "; ".join(f"{r} in {', '.join(fs)}" for r, fs in list(self.duplicated_rows.items())[:5])
            out.append(f"{self.n_duplicated_rows} row id(s) duplicated: {shown}" + (" ..." if self.n_duplicated_rows > 5 else ""))
        return out

    def summary(self) -> str:
        head = f"{self.n_present} of {self.n_planned} planned rows present in {len(self.shards)} readable shard(s) of {len(self.job_dirs)} job(s)"
        if self.n_unplanned_rows:
            head += f"; {self.n_unplanned_rows} row(s) not in any plan"
        return head

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_dir": str(self.sweep_dir),
            "ok": self.ok,
            "summary": self.summary(),
            "n_jobs": len(self.job_dirs),
            "n_readable_shards": len(self.shards),
            "n_planned": self.n_planned,
            "n_present": self.n_present,
            "n_missing_rows": self.n_missing_rows,
            "missing_rows": self.missing_rows,
            "n_duplicated_rows": self.n_duplicated_rows,
            "duplicated_rows": self.duplicated_rows,
            "n_unplanned_rows": self.n_unplanned_rows,
            "missing_shards": self.missing_shards,
            "corrupt_files": self.corrupt_files,
            "truncated_files": self.truncated_files,
            "unfinished_files": self.unfinished_files,
            "foreign_files": self.foreign_files,
            "never_started": self.never_started,
            "bad_plans": self.bad_plans,
            "problems": self.problems(),
        }


def _validate_file(path: Path, manifest: dict[str, Any] | None) -> tuple[int | None, str | None, str | None, str]:
    """(n_rows, corrupt_reason, truncated_reason, kind) from the footer alone."""
    try:
        pf = pq.ParquetFile(path)
        meta, names = pf.metadata, set(pf.schema_arrow.names)
        sensdir_meta = metadata_of_schema(pf.schema_arrow)
    except (OSError, pa.ArrowException) as e:
        return None, f"{type(e).__name__}: {e}", None, "walk"
    kind = kind_of(sensdir_meta)
    lacking = [c for c in required_columns(sensdir_meta) if c not in names]
    if lacking:
        return None, f"lacks column(s) {lacking}", None, kind
    if manifest is not None and manifest.get("n_rows") is not None and meta.num_rows != manifest["n_rows"]:
        return meta.num_rows, None, f"{meta.num_rows} rows, manifest says {manifest['n_rows']}", kind
    return meta.num_rows, None, None, kind


def check_completeness(sweep_dir: Path, progress: bool = True) -> Completeness:
    sweep_dir = Path(sweep_dir)
    comp = Completeness(sweep_dir=sweep_dir, job_dirs=find_job_dirs(sweep_dir))
    planned: list[pa.Array] = []
    for jdir in comp.job_dirs:
        planned += _scan_job(comp, jdir)
    _, bad_sweep_plans = read_sweep_plans(sweep_dir)
    comp.bad_plans.update(bad_sweep_plans)
    not_started = never_started(sweep_dir)
    comp.never_started = [ps.describe() for ps in not_started]
    listed = {str(ps.files(sweep_dir).parquet) for ps in not_started}
    comp.missing_shards = [p for p in comp.missing_shards if p not in listed]
    present, owners = _read_row_ids(comp, progress)
    _compare_rows(comp, planned, present, owners)
    return comp


def _scan_job(comp: Completeness, jdir: Path) -> list[pa.Array]:
    """Plans and files of one job folder into ``comp``; returns the planned row ids."""
    planned: list[pa.Array] = []
    expected: set[ShardId] = set()
    scan = scan_job(jdir, verify=True)
    for sid, plan_file in scan.plans.items():
        # a job whose plans say ``shards: n`` is expected to have shards 0..n-1
        expected.update(sid.siblings())
        plan = read_json(plan_file)
        if plan is None or not isinstance(plan.get("row_ids"), list):
            comp.bad_plans[str(plan_file)] = "not a readable plan (JSON with row_ids)"
            continue
        planned.append(pa.array(plan["row_ids"], type=pa.string()))
    for sid in sorted(expected):
        if not ShardFiles(jdir, sid).parquet.exists():
            comp.missing_shards.append(str(ShardFiles(jdir, sid).parquet))
    comp.corrupt_files.update(scan.damaged)
    comp.foreign_files.update(scan.foreign)
    comp.unfinished_files += [str(r.path) for r in scan.unfinished]
    for rec in scan.finished:
        manifest = rec.manifest or {}
        n_rows, corrupt, truncated, kind = _validate_file(rec.path, manifest)
        if corrupt:
            comp.corrupt_files[str(rec.path)] = corrupt
            continue
        if truncated:
            comp.truncated_files[str(rec.path)] = truncated
        comp.manifests.setdefault(manifest.get("job_key", jdir.name), manifest)
        comp.shards.append(ShardFile(rec.path, jdir, rec.files.id.stem, n_rows or 0, manifest, kind))
    return planned


def _decode_all(path: Path) -> None:
    """Decode every page of a file whose manifest has no checksum (written before checksums)."""
    for _ in pq.ParquetFile(path).iter_batches(batch_size=65536):
        pass


def _read_row_ids(comp: Completeness, progress: bool) -> tuple[list[pa.Array], list[pa.Array]]:
    """Row ids of every readable file: one projected column per file, read file by file so that
    a file whose data pages are damaged (footer intact) is caught and named too. Files that
    fail are moved from ``comp.shards`` to ``comp.corrupt_files``."""
    present: list[pa.Array] = []
    owners: list[pa.Array] = []
    readable: list[ShardFile] = []
    bar = tqdm(comp.shards, desc="reduce: row ids", unit="shard", disable=not progress)
    for sf in bar:
        try:
            if not (sf.manifest or {}).get("parquet_sha256"):
                _decode_all(sf.path)
            ids = ds.dataset(sf.path, format="parquet").to_table(columns=["row_id"]).column("row_id").combine_chunks()
        except (OSError, pa.ArrowException) as e:
            comp.corrupt_files[str(sf.path)] = f"{type(e).__name__}: {e}"
            continue
        readable.append(sf)
        present.append(ids)
        owners.append(pa.array([len(readable) - 1] * len(ids), type=pa.int32()))
    bar.close()
    comp.shards = readable
    return present, owners


def _compare_rows(comp: Completeness, planned: list[pa.Array], present: list[pa.Array], owners: list[pa.Array]) -> None:
    """Planned against present row ids: missing, duplicated and unplanned rows."""
    present_ids = pa.chunked_array(present, type=pa.string()).combine_chunks() if present else pa.array([], pa.string())
    planned_ids = pa.chunked_array(planned, type=pa.string()).combine_chunks() if planned else pa.array([], pa.string())
    planned_unique = pc.unique(planned_ids)
    comp.n_planned = len(planned_unique)
    counts = (
        pc.value_counts(present_ids)
        if len(present_ids)
        else pa.StructArray.from_arrays([pa.array([], pa.string()), pa.array([], pa.int64())], ["values", "counts"])
    )
    values, n = counts.field("values"), counts.field("counts")
    comp.n_present = len(values)
    dup_ids = pc.filter(values, pc.greater(n, 1))
    comp.n_duplicated_rows = len(dup_ids)
    if len(dup_ids):
        owner_of = pa.chunked_array(owners, type=pa.int32()).combine_chunks()
        mask = pc.is_in(present_ids, value_set=dup_ids)
        for rid, fi in zip(pc.filter(present_ids, mask).to_pylist(), pc.filter(owner_of, mask).to_pylist()):
            path = str(comp.shards[fi].path)
            comp.duplicate_owner.setdefault(rid, path)
            if rid in comp.duplicated_rows or len(comp.duplicated_rows) < MAX_LISTED:
                comp.duplicated_rows.setdefault(rid, []).append(path)
    missing = pc.filter(planned_unique, pc.invert(pc.is_in(planned_unique, value_set=values)))
    comp.n_missing_rows = len(missing)
    comp.missing_rows = missing.slice(0, MAX_LISTED).to_pylist()
    if len(planned_unique):
        comp.n_unplanned_rows = int(pc.sum(pc.invert(pc.is_in(values, value_set=planned_unique))).as_py() or 0)
