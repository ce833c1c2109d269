"""Parquet shards and their manifests: schema, atomic writes, completeness.

One job writes ``shard-<i>-of-<n>.plan.json`` (the row ids it will write) once its input is
checked, then one shard ``shard-<i>-of-<n>.parquet`` with one row per perturbation and,
beside it, ``shard-<i>-of-<n>.manifest.json`` (resolved config, versions, git commit, seed,
host, timings). The manifest is written last, so a shard without a complete manifest is
never taken as finished. The schema is documented in docs/shards.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1

# Fixed columns; direction-specific facts (``info``) are appended as nullable columns.
BASE_FIELDS = [
    pa.field("row_id", pa.string(), nullable=False),
    pa.field("job_key", pa.string(), nullable=False),
    pa.field("direction", pa.string(), nullable=False),
    pa.field("schedule", pa.string(), nullable=False),
    pa.field("grid_kind", pa.string(), nullable=False),
    pa.field("shard", pa.int32(), nullable=False),
    pa.field("prompt_index", pa.int64(), nullable=False),
    pa.field("target_index", pa.int32(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("prompt_tokens", pa.list_(pa.int32()), nullable=False),
    pa.field("grid", pa.list_(pa.float32()), nullable=False),
    pa.field("kl", pa.list_(pa.float32()), nullable=False),
    pa.field("l2", pa.list_(pa.float32()), nullable=False),
    pa.field("n_valid_steps", pa.int32(), nullable=False),
    pa.field("ms_step_kl", pa.int32(), nullable=False),
    pa.field("ms_step_l2", pa.int32(), nullable=False),
    pa.field("plateau_len", pa.int32(), nullable=False),
    pa.field("base_norm", pa.float32(), nullable=False),
]


def shard_stem(shard: int, shards: int) -> str:
    return f"shard-{shard:05d}-of-{shards:05d}"


def shard_paths(job_dir: Path, shard: int, shards: int) -> tuple[Path, Path]:
    stem = shard_stem(shard, shards)
    return job_dir / f"{stem}.parquet", job_dir / f"{stem}.manifest.json"


def plan_path(job_dir: Path, shard: int, shards: int) -> Path:
    """The rows a shard will hold, written before its compute starts."""
    return job_dir / f"{shard_stem(shard, shards)}.plan.json"


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table_atomic(path: Path, table: pa.Table) -> None:
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_table(columns: dict[str, list], metadata: dict[str, Any]) -> pa.Table:
    fields = list(BASE_FIELDS)
    known = {f.name for f in fields}
    arrays = [pa.array(columns[f.name], type=f.type) for f in fields]
    for name in sorted(set(columns) - known):
        arr = pa.array(columns[name])
        fields.append(pa.field(name, arr.type, nullable=True))
        arrays.append(arr)
    schema = pa.schema(fields, metadata={"sensdir": json.dumps(metadata, sort_keys=True, default=str)})
    return pa.Table.from_arrays(arrays, schema=schema)


def build_plain_table(columns: dict[str, list], metadata: dict[str, Any]) -> pa.Table:
    """A study's table: column types inferred, ``row_id`` first."""
    names = ["row_id"] + [c for c in columns if c != "row_id"]
    arrays = [pa.array(columns[c]) for c in names]
    schema = pa.schema([pa.field(c, a.type) for c, a in zip(names, arrays)], metadata={"sensdir": json.dumps(metadata, sort_keys=True, default=str)})
    return pa.Table.from_arrays(arrays, schema=schema)


def open_sweep(sweep_dir: str | Path):
    """All walk shards of a sweep as one ``pyarrow.dataset`` (Hydra's logs, reduce outputs
    and study tables beside them are left out)."""
    import pyarrow.dataset as ds

    files = [
        str(p) for p in sorted(Path(sweep_dir).glob("*/shard-*.parquet"))
        if json.loads((pq.read_schema(p).metadata or {}).get(b"sensdir", b"{}")).get("kind", "walk") == "walk"
    ]
    if not files:
        raise FileNotFoundError(f"no walk shards under {sweep_dir}/*/")
    return ds.dataset(files, format="parquet")


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(job_dir: Path, shard: int, shards: int, config_hash: str) -> bool:
    """A shard counts as done only if its manifest says so for this exact config and the
    Parquet file it names is there with the recorded number of rows."""
    parquet, manifest_path = shard_paths(job_dir, shard, shards)
    manifest = read_manifest(manifest_path)
    if not manifest or manifest.get("status") != "complete" or manifest.get("config_hash") != config_hash:
        return False
    try:
        return pq.ParquetFile(parquet).metadata.num_rows == manifest.get("n_rows")
    except (OSError, pa.ArrowException):
        return False
