"""The columns of walk and study shards (docs/shards.md) and the readers' view of a sweep.

A walk shard has the fixed columns below, then each metric's curve and summaries (declared by
the metric, ``sensdir.metrics``), then the direction type's own facts as nullable columns.
The schema metadata (key ``sensdir``) holds the resolved config, the identity and the metric
table, so a reader needs nothing but the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa

from sensdir.artifacts.layout import find_job_dirs
from sensdir.artifacts.records import METADATA_KEY, dumps_json, kind_of, read_metadata
from sensdir.artifacts.shards import scan_job

SCHEMA_VERSION = 1

# Per-step curve columns and per-row summaries come from the metrics; these are always there.
ID_FIELDS = [
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
    pa.field("n_valid_steps", pa.int32(), nullable=False),
    pa.field("base_norm", pa.float32(), nullable=False),
]
CURVE_TYPE = pa.list_(pa.float32())
SUMMARY_TYPE = pa.int32()

# What shards written before metrics were declared in their metadata hold.
LEGACY_METRICS: dict[str, Any] = {
    "kl": {"label": "KL", "summaries": [{"column": "ms_step_kl", "figure": "ms_step", "label": "KL max-slope step"}]},
    "l2": {
        "label": "L2",
        "summaries": [
            {"column": "ms_step_l2", "figure": "ms_step", "label": "L2 max-slope step"},
            {"column": "plateau_len", "figure": "plateau", "label": "plateau length"},
        ],
    },
}


# Comparison roles of direction types (``Direction.comparison_role``) for shards written
# before the role was declared in their metadata.
LEGACY_ROLES = {
    "sae_error": "error",
    "eps_random": "error_baseline",
    "cov_mixture": "error_baseline",
    "real_mixture": "error_baseline",
}


def direction_of(meta: dict[str, Any]) -> dict[str, Any]:
    """A walk shard's direction: ``label`` (the ``direction`` column) and comparison ``role``."""
    if "direction" in meta:
        return meta["direction"]
    name = str(((meta.get("config") or {}).get("direction") or {}).get("name"))
    return {"label": name, "role": LEGACY_ROLES.get(name)}


# Direction facts the reduce tabulates per type (mean, sd): what the target is like.
FACT_COLUMNS = {
    "base_norm": "base norm ||A||",
    "target_norm": "target norm ||T||",
    "unmatched_target_norm": "target norm before norm matching",
    "natural_length": "natural length",
    "error_norm": "SAE error norm ||SAE(A) - A||",
    "anchor_cos": "achieved anchor cosine (synth_struct)",
    "base_l0": "L0 of the base's SAE code",
    "target_l0": "L0 of the target's SAE code",
    "start_norm": "start norm (plateau)",
}


def hook_of(meta: dict[str, Any]) -> str:
    """The hook a walk shard perturbed: recorded by the job, else the config's, else read from
    the SAE id (a site left to the SAE is the SAE's hook)."""
    recorded = (meta.get("site") or {}).get("hook")
    cfg = meta.get("config") or {}
    configured = (cfg.get("site") or {}).get("hook")
    if recorded or configured:
        return str(recorded or configured)
    sae_id = str((cfg.get("sae") or {}).get("sae_id") or "")
    head = sae_id.split("/", 1)[0]
    return head if head.startswith("blocks.") else "(the SAE's hook)"


def metrics_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The metric table a walk shard declares (``LEGACY_METRICS`` for older shards)."""
    return meta.get("metrics") or LEGACY_METRICS


def required_columns(meta: dict[str, Any]) -> list[str]:
    """Columns a shard of this metadata must have to be read."""
    if kind_of(meta) != "walk":
        return ["row_id", "job_key"]
    cols = ["row_id", "job_key", "direction"]
    for name, m in metrics_of(meta).items():
        cols += [name, *(s["column"] for s in m["summaries"])]
    return cols


def schema_metadata(metadata: dict[str, Any]) -> dict[bytes, bytes]:
    return {METADATA_KEY: dumps_json(metadata, indent=None).encode()}


def build_walk_table(columns: dict[str, list], metric_fields: list[pa.Field], metadata: dict[str, Any]) -> pa.Table:
    fields = [*ID_FIELDS, *metric_fields]
    arrays = [pa.array(columns[f.name], type=f.type) for f in fields]
    known = {f.name for f in fields}
    for name in sorted(set(columns) - known):
        arr = pa.array(columns[name])
        fields.append(pa.field(name, arr.type, nullable=True))
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=schema_metadata(metadata)))


def build_study_table(columns: dict[str, list], metadata: dict[str, Any]) -> pa.Table:
    """A study's table: column types inferred, ``row_id`` first."""
    names = ["row_id"] + [c for c in columns if c != "row_id"]
    arrays = [pa.array(columns[c]) for c in names]
    schema = pa.schema([pa.field(c, a.type) for c, a in zip(names, arrays)], metadata=schema_metadata(metadata))
    return pa.Table.from_arrays(arrays, schema=schema)


def open_sweep(sweep_dir: str | Path, verify: bool = True):
    """All finished walk shards of a sweep as one ``pyarrow.dataset``: exactly the Parquet files
    that complete manifests name (Hydra's logs, reduce outputs, study tables, unfinished shards
    and any other Parquet file in a job folder are left out). With ``verify``, a file whose
    bytes differ from its manifest's sha256 is left out too; every file left out is named in
    one warning (``python -m sensdir.reduce`` reports them in full)."""
    import pyarrow.dataset as ds

    files, left_out = [], []
    for jdir in find_job_dirs(Path(sweep_dir)):
        scan = scan_job(jdir, verify=verify)
        files += [str(s.path) for s in scan.finished if kind_of(read_metadata(s.path)) == "walk"]
        left_out += [f"{p} ({why})" for p, why in {**scan.damaged, **scan.foreign}.items()]
    if left_out:
        warnings.warn("open_sweep left out: " + "; ".join(left_out), stacklevel=2)
    if not files:
        raise FileNotFoundError(f"no walk shards under {sweep_dir}/*/")
    return ds.dataset(files, format="parquet")
