"""The columns of walk and study shards (docs/shards.md) and the readers' view of a sweep.

A walk shard (schema version 2) has the identity columns, the job's context (model, SAE,
hook, positions, schedule parameters), each metric's curve, summaries and censoring flags
(declared by the metric, ``sensdir.metrics``), then every direction fact any registered
direction type declares (``Direction.info_columns``), null where the shard's type does not
produce it. So every walk shard of a sweep has the same columns in the same order, and any
Parquet reader reads the sweep whole. The schema metadata (key ``sensdir``) holds the
resolved config, the identity and the metric table, so a reader needs nothing but the file.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa

from sensdir.artifacts.layout import find_job_dirs
from sensdir.artifacts.records import METADATA_KEY, dumps_json, kind_of, read_metadata
from sensdir.artifacts.shards import scan_job

SCHEMA_VERSION = 2

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
# Schema version 2: what the job ran on, as columns, so a sweep over models, SAEs, hooks or
# schedule settings groups without reading metadata. Null where a setting does not apply
# (``schedule_step_size`` on a relative walk) or for version-1 shards read through open_sweep.
CONTEXT_FIELDS = [
    pa.field("model", pa.string()),
    pa.field("sae_release", pa.string()),
    pa.field("sae_id", pa.string()),
    pa.field("hook", pa.string()),
    pa.field("positions", pa.string()),
    pa.field("schedule_n_steps", pa.int32()),
    pa.field("schedule_step_size", pa.float64()),
    pa.field("schedule_preset", pa.string()),
    pa.field("schedule_lengths", pa.list_(pa.float64())),
]
# Direction facts are declared by name -> one of these type names (``Direction.info_columns``);
# the types are those version-1 shards got by inference, so both versions unify.
INFO_TYPES: dict[str, pa.DataType] = {"float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}
# Facts added by shared code rather than one type: the natural length of scaled directions,
# and the norm-matched variants' columns (``sensdir.sae_ops.match_real_norm``).
COMMON_INFO_COLUMNS = {"natural_length": "float64", "norm_source_index": "int64", "unmatched_target_norm": "float64"}
# With ``site.positions=all`` every position has its own proposal: the fact columns hold the
# last position's value and this column the JSON object {fact: [value per position]}.
BY_POSITION_FIELD = pa.field("info_by_position", pa.string())
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


def info_fields(declared: dict[str, str]) -> list[pa.Field]:
    """The direction-fact fields of a version-2 walk shard: ``COMMON_INFO_COLUMNS`` and
    ``declared`` (name -> type name of ``INFO_TYPES``), sorted by name, then ``info_by_position``."""
    both = {**COMMON_INFO_COLUMNS}
    for name, kind in declared.items():
        if both.get(name, kind) != kind:
            raise ValueError(f"direction fact {name!r} is declared as {both[name]} and as {kind}")
        if kind not in INFO_TYPES:
            raise ValueError(f"direction fact {name!r}: type {kind!r} is not one of {', '.join(INFO_TYPES)}")
        both[name] = kind
    return [pa.field(n, INFO_TYPES[both[n]]) for n in sorted(both)] + [BY_POSITION_FIELD]


def walk_schema(metric_fields: list[pa.Field], declared: dict[str, str]) -> list[pa.Field]:
    """Every column of a version-2 walk shard, in order."""
    return [*ID_FIELDS, *CONTEXT_FIELDS, *metric_fields, *info_fields(declared)]


def _array(values: Any, type_: pa.DataType) -> pa.Array:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.cast(type_)
    return pa.array(values, type=type_)  # NaN facts (e.g. no pair drawn) stay NaN, not null


def build_walk_table(
    columns: dict[str, Any], metric_fields: list[pa.Field], declared: dict[str, str], metadata: dict[str, Any]
) -> pa.Table:
    """A version-2 walk shard: ``columns`` (name -> values, lists or Arrow arrays) laid on
    ``walk_schema``; a declared fact or context column the job did not produce is null. A
    column that is not declared is an error naming it: a direction type declares its facts in
    ``info_columns``."""
    fields = walk_schema(metric_fields, declared)
    names = {f.name for f in fields}
    extra = sorted(set(columns) - names)
    if extra:
        raise ValueError(
            f"walk columns {', '.join(extra)} are not declared: a direction type lists its facts in its "
            "info_columns class attribute (name -> " + " | ".join(INFO_TYPES) + ")"
        )
    n = len(next(iter(columns.values()))) if columns else 0
    arrays = [_array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type) for f in fields]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=schema_metadata(metadata)))


def by_position(info: dict[str, list[list]]) -> tuple[dict[str, list], list[str]]:
    """Per-position facts (``site.positions=all``: one list per row) as the last position's
    value per row, and per row the JSON object of every position's values."""
    keys = list(info)
    n = len(info[keys[0]]) if keys else 0
    last = {k: [v[-1] if v else None for v in info[k]] for k in keys}
    clean = {k: [[None if isinstance(x, float) and not math.isfinite(x) else x for x in v] for v in info[k]] for k in keys}
    rows = [json.dumps({k: clean[k][i] for k in keys}, sort_keys=True) for i in range(n)]
    return last, rows


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
    one warning (``python -m sensdir.reduce`` reports them in full).

    The dataset's schema is the union of the shards' schemas, so no column of any shard is
    dropped: a column a shard lacks (a version-1 shard's context columns and other types'
    facts; a metric that only some jobs computed) reads as null in its rows."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    files, left_out = [], []
    for jdir in find_job_dirs(Path(sweep_dir)):
        scan = scan_job(jdir, verify=verify)
        files += [str(s.path) for s in scan.finished if kind_of(read_metadata(s.path)) == "walk"]
        left_out += [f"{p} ({why})" for p, why in {**scan.damaged, **scan.foreign}.items()]
    if left_out:
        warnings.warn("open_sweep left out: " + "; ".join(left_out), stacklevel=2)
    if not files:
        raise FileNotFoundError(f"no walk shards under {sweep_dir}/*/")
    return ds.dataset(files, schema=unified_schema([pq.read_schema(f) for f in files], files), format="parquet")


def unified_schema(schemas: list[pa.Schema], files: list[str]) -> pa.Schema:
    """The union of the shards' columns (first appearance order), without per-file metadata; a
    column whose type differs between shards is an error naming the column and two files."""
    fields: dict[str, tuple[pa.Field, str]] = {}
    for schema, path in zip(schemas, files):
        for f in schema:
            seen = fields.get(f.name)
            if seen is None:
                fields[f.name] = (f.with_nullable(True), path)
            elif not seen[0].type.equals(f.type):
                raise TypeError(
                    f"column {f.name!r} is {seen[0].type} in {seen[1]} but {f.type} in {path}: version-1 shards of "
                    "site.positions=all hold per-position lists there; read such shards one by one (pyarrow.parquet)"
                )
    return pa.schema([f for f, _ in fields.values()])
