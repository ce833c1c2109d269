"""Prefetched rows of a streamed dataset, as local Parquet files.

``datasets`` never caches a streamed dataset (OpenWebText for ``data=openwebtext``), so a
compute node without internet cannot read it. ``sensdir-prefetch`` writes the first rows of
the *shuffled* stream, in the order a job reads them (``datasets``' streaming shuffle with the
job's seed and ``SHUFFLE_BUFFER``), to one Parquet file per (dataset, config, split, data
files, text column, seed)::

    <root>/<org>--<name>/<split>-seed<seed>-<key>.parquet

``root`` is ``$SENSDIR_DATA_CACHE``, else ``$HF_HOME/sensdir/datasets`` (HF_HOME as
huggingface_hub resolves it; ``~/.cache/huggingface`` by default). The data loader reads these
rows first, in order, and goes to the hub only for rows past their end, so a job sees the same
prompts with or without the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sensdir.config import DataConfig

SHUFFLE_BUFFER = 10_000  # the streaming shuffle's buffer (rows), part of what a prefetched file holds
ENV = "SENSDIR_DATA_CACHE"
_META_KEY = b"sensdir_prefetch"
# ``datasets``' builders that read files named by data.data_files: nothing to prefetch
LOCAL_BUILDERS = ("parquet", "json", "csv", "text", "arrow")


def root() -> Path:
    """Where prefetched dataset rows live."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "sensdir" / "datasets"


def is_local(cfg: DataConfig) -> bool:
    """Whether the data are local files (``data.dataset=parquet data.data_files=...``)."""
    return cfg.dataset in LOCAL_BUILDERS and bool(cfg.data_files)


def identity(cfg: DataConfig, seed: int) -> dict[str, Any]:
    """What decides the rows of the stream, in order."""
    return {
        "dataset": cfg.dataset,
        "dataset_config": cfg.dataset_config,
        "split": cfg.split,
        "data_files": cfg.data_files,
        "text_column": cfg.text_column,
        "seed": seed,
        "shuffle_buffer": SHUFFLE_BUFFER,
    }


def path_for(cfg: DataConfig, seed: int) -> Path:
    ident = identity(cfg, seed)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    name = re.sub(r"[^\w.-]", "_", str(cfg.dataset).replace("/", "--"))
    split = re.sub(r"[^\w.-]", "_", cfg.split)
    return root() / name / f"{split}-seed{seed}-{key}.parquet"


def rows_in(path: Path, cfg: DataConfig, seed: int) -> int | None:
    """Rows of the prefetched file at ``path`` for this data and seed; None when there is
    none (or the file is unreadable, or holds another stream)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        meta = pq.ParquetFile(path).schema_arrow.metadata or {}
        stored = json.loads(meta.get(_META_KEY, b"{}"))
        n = pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError):  # pyarrow's errors derive from these; JSON's too
        return None
    return n if stored == identity(cfg, seed) else None


def read_texts(path: Path, cfg: DataConfig) -> Iterator[str]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(columns=[cfg.text_column], batch_size=1024):
        yield from batch.column(0).to_pylist()


def write_rows(path: Path, cfg: DataConfig, seed: int, texts: list[str]) -> int:
    """Write ``texts`` (the stream's first rows) atomically; returns the file's size in bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({cfg.text_column: pa.array(texts, type=pa.large_string())})
    table = table.replace_schema_metadata({_META_KEY: json.dumps(identity(cfg, seed), sort_keys=True).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size
