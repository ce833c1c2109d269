"""Reading and writing a shard's records: plan, Parquet table, manifest.

A job writes the plan once its input has passed every check, then the Parquet file, then the
manifest, each to a temporary name in the same folder and renamed, so a reader never sees a
half-written file and a shard without a complete manifest is never taken as finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sensdir.artifacts.layout import ShardFiles

METADATA_KEY = b"sensdir"


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


def read_json(path: Path) -> dict[str, Any] | None:
    """A plan or manifest, or None where it is missing or unreadable."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def write_plan(files: ShardFiles, jkey: str, chash: str, row_ids: list[str]) -> None:
    # Written once every check has passed: the reduce compares it with what the shards hold,
    # so a job killed mid-run shows up as missing rows, not as nothing.
    write_json_atomic(
        files.plan,
        {
            "job_key": jkey,
            "config_hash": chash,
            "shard": files.id.shard,
            "shards": files.id.shards,
            "n_rows": len(row_ids),
            "row_ids": row_ids,
        },
    )


def complete_manifest(manifest_path: Path) -> dict[str, Any] | None:
    """The manifest if it says the shard is complete, else None."""
    manifest = read_json(manifest_path)
    return manifest if manifest is not None and manifest.get("status") == "complete" else None


def metadata_of_schema(schema: pa.Schema) -> dict[str, Any]:
    """The ``sensdir`` entry of a Parquet schema's metadata ({} where absent or unreadable)."""
    try:
        meta = json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}"))
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def read_metadata(parquet: Path) -> dict[str, Any]:
    return metadata_of_schema(pq.read_schema(parquet))


def kind_of(meta: dict[str, Any]) -> str:
    """What wrote a shard: ``walk`` or a study's name."""
    return meta.get("kind", "walk")


def is_complete(files: ShardFiles, config_hash: str) -> bool:
    """Done only if the manifest says so for this exact config and the Parquet file it names
    is there with the recorded number of rows."""
    manifest = complete_manifest(files.manifest)
    if manifest is None or manifest.get("config_hash") != config_hash:
        return False
    try:
        return pq.ParquetFile(files.parquet).metadata.num_rows == manifest.get("n_rows")
    except (OSError, pa.ArrowException):
        return False
