"""The per-row numbers the reduce keeps for a whole sweep: each metric summary with its
censoring flag (METHODS §10), and the direction types' facts about their targets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sensdir.artifacts.schema import FACT_COLUMNS

# How shards written before censoring flags existed are read: a max-slope step at the last
# valid step, or a plateau length equal to the walk's valid steps, is censored.
_LEGACY_CENSORING = {"ms_step": 1, "plateau": 0}


def censored_column(summary: dict[str, Any]) -> str:
    return summary.get("censored_column") or f"{summary['column']}_censored"


def summary_columns(summaries: list[dict[str, Any]]) -> list[str]:
    """The Parquet columns that hold the summaries and their flags."""
    return [c for s in summaries for c in (s["column"], censored_column(s))]


def _numbers(batch: pa.RecordBatch, name: str) -> np.ndarray | None:
    if name not in batch.schema.names:
        return None
    col = batch.column(name)
    if pa.types.is_list(col.type) or not (
        pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
    ):
        return None  # per-position lists (site mode all) and non-numbers are not averaged
    return col.to_numpy(zero_copy_only=False).astype(np.float32)


def batch_scalars(batch: pa.RecordBatch, summaries: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Summary values, their censoring flags (1.0 censored, 0.0 not), ``n_valid_steps`` and the
    target facts present in ``batch``; absent ones are left out (the reader fills NaN)."""
    out: dict[str, np.ndarray] = {}
    n_valid = _numbers(batch, "n_valid_steps")
    if n_valid is not None:
        out["n_valid_steps"] = n_valid
    for s in summaries:
        value = _numbers(batch, s["column"])
        if value is None:
            continue
        out[s["column"]] = value
        flag = _numbers(batch, censored_column(s))
        if flag is None and n_valid is not None and s["figure"] in _LEGACY_CENSORING:
            flag = (value == n_valid - _LEGACY_CENSORING[s["figure"]]).astype(np.float32)
        if flag is not None:
            out[censored_column(s)] = flag
    for name in FACT_COLUMNS:
        value = _numbers(batch, name)
        if value is not None:
            out[name] = value
    return out
