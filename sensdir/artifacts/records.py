"""Reading and writing a shard's records: plan, Parquet table, manifest.

A job writes the plan once its input has passed every check, then the Parquet file, then the
manifest, each to a temporary name in the same folder and renamed, so a reader never sees a
half-written file and a shard without a complete manifest is never taken as finished. The
manifest carries the Parquet file's size and sha256 (``parquet_bytes``, ``parquet_sha256``):
a shard whose bytes changed after it was written is not complete (``shard_problem``).

Files are created with the process umask's mode (0666 & ~umask), like ``open`` would, so
group members of a shared results folder can read them. JSON is written strictly
(``allow_nan=False``): a non-finite float becomes null and its path is listed under
``nonfinite_as_null``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sensdir.artifacts.layout import ShardFiles

METADATA_KEY = b"sensdir"
NONFINITE_KEY = "nonfinite_as_null"


def current_umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, for a moment, in every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path, directory: bool = False) -> None:
    """Give a file made by ``mkstemp``/``mkdtemp`` (0600/0700) the mode ``open``/``mkdir`` would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def finite(obj: Any, path: str = "", found: list[str] | None = None) -> Any:
    """A copy of plain JSON data with non-finite floats as None; their paths go to ``found``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if found is not None:
            found.append(path or "<root>")
        return None
    if isinstance(obj, dict):
        return {k: finite(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    return obj


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON (never a bare NaN or Infinity): non-finite floats are written as null, and a
    dict notes their paths under ``nonfinite_as_null``."""
    found: list[str] = []
    clean = finite(json.loads(json.dumps(obj, default=str)), found=found)
    if found and isinstance(clean, dict):
        clean[NONFINITE_KEY] = found
    return json.dumps(clean, indent=indent, sort_keys=True, allow_nan=False)


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    follow_umask(tmp)
    return fd, tmp


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, dumps_json(obj))


def file_digest(path: str | Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def write_table_atomic(path: Path, table: pa.Table) -> dict[str, Any]:
    """Write ``table`` to ``path`` atomically; returns the manifest's ``parquet_bytes`` and
    ``parquet_sha256`` of exactly the bytes written."""
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        size, sha = file_digest(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"parquet_bytes": size, "parquet_sha256": sha}


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


def named_parquet(files: ShardFiles, manifest: dict[str, Any]) -> str | None:
    """Why the Parquet file a manifest names is not this shard's own file, or None."""
    name = manifest.get("parquet", files.parquet.name)
    return None if name == files.parquet.name else f"manifest names {name!r}, not {files.parquet.name!r}"


def verify_parquet(path: Path, manifest: dict[str, Any]) -> str | None:
    """Why the Parquet file does not hold the bytes its manifest recorded (size, sha256), or None.
    Manifests written before checksums were recorded are not checked here."""
    want_size, want_sha = manifest.get("parquet_bytes"), manifest.get("parquet_sha256")
    if want_sha is None:
        return None
    try:
        size, sha = file_digest(path)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if want_size is not None and size != want_size:
        return f"{size} bytes, manifest says {want_size} (truncated or appended to)"
    if sha != want_sha:
        return f"content checksum mismatch: sha256 {sha[:16]}..., manifest says {str(want_sha)[:16]}... (damaged)"
    return None


def shard_problem(files: ShardFiles, config_hash: str) -> str | None:
    """None if the shard is complete for this exact config: a complete manifest naming this
    shard's Parquet file, which holds the recorded bytes (sha256) and number of rows. Else why not."""
    manifest = complete_manifest(files.manifest)
    if manifest is None:
        return "no complete manifest"
    if manifest.get("config_hash") != config_hash:
        return "manifest is of another config"
    wrong_name = named_parquet(files, manifest)
    if wrong_name:
        return wrong_name
    if not files.parquet.exists():
        return f"{files.parquet} is missing"
    damaged = verify_parquet(files.parquet, manifest)
    if damaged:
        return f"{files.parquet}: {damaged}"
    try:
        n = pq.ParquetFile(files.parquet).metadata.num_rows
    except (OSError, pa.ArrowException) as e:
        return f"{files.parquet}: unreadable footer ({type(e).__name__}: {e})"
    return None if n == manifest.get("n_rows") else f"{files.parquet}: {n} rows, manifest says {manifest.get('n_rows')}"


def is_complete(files: ShardFiles, config_hash: str) -> bool:
    return shard_problem(files, config_hash) is None
