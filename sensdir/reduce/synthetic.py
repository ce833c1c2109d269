"""Synthetic sweep directories in the shard format of docs/shards.md, for tests and the
benchmark: no model needed. Curves are sigmoids whose blowup step is drawn per direction
type; their max-slope steps and plateau lengths come from the metrics' own summaries."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sensdir.artifacts.identity import row_id
from sensdir.artifacts.layout import ShardFiles
from sensdir.artifacts.records import write_json_atomic, write_plan, write_table_atomic
from sensdir.artifacts.schema import SCHEMA_VERSION, build_walk_table
from sensdir.config import MetricConfig
from sensdir.metrics.kl import KL
from sensdir.metrics.l2 import L2

# mean blowup step per direction type, roughly the ordering of [GP24]
CENTERS = {"real": 52.0, "sae_recon": 53.0, "synth_struct": 56.0, "synth_baseline": 57.0, "random": 65.0, "isotropic": 70.0}


@dataclass
class JobSpec:
    direction: str
    n_rows: int
    shards: int = 1
    n_steps: int = 100
    schedule: str = "relative"
    grid_kind: str = "t"
    sae: dict[str, Any] = field(
        default_factory=lambda: {"source": "embedded", "release": "embedded", "sae_id": "blocks.1.hook_resid_pre/l1-mid"}
    )
    hook: str = "blocks.1.hook_resid_pre"
    center: float | None = None
    natural_length: bool = False  # add a natural_length column
    flat: float = 0.0  # fraction of rows whose curves never blow up (censored summaries)
    extra_config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


def _list_array(x_NK: np.ndarray, valid_NK: np.ndarray | None = None) -> pa.ListArray:
    n, k = x_NK.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    mask = None if valid_NK is None or valid_NK.all() else ~valid_NK.reshape(-1)
    values = pa.array(x_NK.reshape(-1).astype(np.float32), mask=mask)
    return pa.ListArray.from_arrays(offsets, values)


def _summaries(y_NK: np.ndarray, valid_NK: np.ndarray, cfg: MetricConfig) -> dict[str, np.ndarray]:
    """The job's own summaries of the synthetic KL and L2 curves."""
    import torch

    out = {}
    for metric, y in ((KL, y_NK[0]), (L2, y_NK[1])):
        y_t, v_t = torch.from_numpy(np.ascontiguousarray(y)), torch.from_numpy(valid_NK)
        for s in metric.summaries:
            value = s.compute(y_t, v_t, cfg)
            out[s.column] = value.numpy().astype(np.int32)
            if s.censored is not None and s.censored_column is not None:
                out[s.censored_column] = s.censored(value, v_t).numpy()
    return out


def _role(direction: str) -> str | None:
    from sensdir.directions import DIRECTIONS
    from sensdir.registry import UnknownNameError

    try:
        return DIRECTIONS.get(direction).impl.comparison_role
    except UnknownNameError:
        return None


def job_key(spec: JobSpec) -> str:
    ident = json.dumps([spec.direction, spec.schedule, spec.sae, spec.hook, spec.grid_kind, spec.seed], sort_keys=True)
    return f"{spec.direction}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def config_for(spec: JobSpec, api_key_field: str | None = None) -> dict[str, Any]:
    cfg = {
        "model": {"source": "embedded", "name": "embedded"},
        "sae": dict(spec.sae),
        "site": {"hook": spec.hook, "positions": "last"},
        "direction": {"_type": "Config", "name": spec.direction},
        "schedule": {"_type": "Config", "name": spec.schedule, "n_steps": spec.n_steps},
        "metric": {"ms_threshold": 0.02, "plateau_l2": 20.0},
        "run": {"name": "synthetic", "seed": spec.seed, "shards": spec.shards},
        **spec.extra_config,
    }
    return cfg


def shard_table(spec: JobSpec, jkey: str, shard: int, rows: range, rng: np.random.Generator, chash: str) -> pa.Table:
    n, k = len(rows), spec.n_steps
    center = spec.center if spec.center is not None else CENTERS.get(spec.direction, 60.0)
    c_N = rng.normal(center, 8.0, n).clip(1, k - 2)
    if spec.grid_kind == "t":
        grid = np.broadcast_to(np.linspace(0, 1, k, dtype=np.float32), (n, k))
    else:
        grid = np.broadcast_to(np.arange(k, dtype=np.float32) * 0.5, (n, k))
    steps = np.arange(k, dtype=np.float32)
    z = (steps[None, :] - c_N[:, None].astype(np.float32)) / 3.0
    sig = 1.0 / (1.0 + np.exp(-z))
    if spec.flat:
        sig[rng.random(n) < spec.flat] = 0.0  # no blowup inside the walk
    kl = (5.0 * sig + 0.01 * steps[None, :]).astype(np.float32)
    l2 = (40.0 * sig + 0.05 * steps[None, :]).astype(np.float32)
    valid = np.ones((n, k), bool)
    if spec.schedule == "absolute":  # drop the tail of some walks, as the absolute schedule does
        stop = rng.integers(k // 2, k + 1, n)
        valid = steps[None, :] < stop[:, None]
    kl_v, l2_v = np.where(valid, kl, np.nan), np.where(valid, l2, np.nan)
    n_valid = valid.sum(1).astype(np.int32)
    p_idx = np.asarray(rows, dtype=np.int64)
    ids = [row_id(jkey, shard, int(p), 0) for p in p_idx]
    cols: dict[str, pa.Array] = {
        "row_id": pa.array(ids, pa.string()),
        "job_key": pa.array([jkey] * n, pa.string()),
        "direction": pa.array([spec.direction] * n, pa.string()),
        "schedule": pa.array([spec.schedule] * n, pa.string()),
        "grid_kind": pa.array([spec.grid_kind] * n, pa.string()),
        "shard": pa.array(np.full(n, shard, np.int32)),
        "prompt_index": pa.array(p_idx),
        "target_index": pa.array(np.zeros(n, np.int32)),
        "seed": pa.array(np.full(n, spec.seed, np.int64)),
        "prompt_tokens": pa.ListArray.from_arrays(
            pa.array(np.arange(0, (n + 1) * 4, 4, dtype=np.int32)), pa.array(np.zeros(4 * n, np.int32))
        ),
        "grid": _list_array(np.ascontiguousarray(grid)),
        "kl": _list_array(kl, valid),
        "l2": _list_array(l2, valid),
        "n_valid_steps": pa.array(n_valid),
        "base_norm": pa.array(np.ones(n, np.float32)),
        **{c: pa.array(v) for c, v in _summaries(np.stack([kl_v, l2_v]), valid, MetricConfig()).items()},
    }
    cols.update({c: pa.array([v] * n) for c, v in _context(spec).items()})
    if spec.natural_length:
        cols["natural_length"] = pa.array(rng.uniform(5, 20, n).astype(np.float32))
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": "walk",
        "config_hash": chash,
        "job_key": jkey,
        "seed": spec.seed,
        "config": config_for(spec),
        "metrics": {m.name: m.describe() for m in (KL, L2)},
        "direction": {"label": spec.direction, "role": _role(spec.direction)},
    }
    return build_walk_table(cols, [*KL.fields(), *L2.fields()], _declared(), meta)


def _context(spec: JobSpec) -> dict[str, Any]:
    """The schema-2 context columns of a synthetic job."""
    sae, disk = spec.sae, spec.sae.get("source") == "disk"
    return {
        "model": "embedded",
        "sae_release": "disk" if disk else sae.get("release"),
        "sae_id": sae.get("path") if disk else sae.get("sae_id"),
        "hook": spec.hook,
        "positions": "last",
        "schedule_n_steps": spec.n_steps,
    }


def _declared() -> dict[str, str]:
    from sensdir.directions.base import declared_info_columns

    return declared_info_columns()


def write_job(sweep_dir: Path, spec: JobSpec, provenance: dict[str, Any] | None = None) -> Path:
    jkey = job_key(spec)
    chash = jkey.split("-")[-1] + "000000"
    jdir = Path(sweep_dir) / jkey
    jdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(jkey.split("-")[-1], 16))
    per = -(-spec.n_rows // spec.shards)
    for s in range(spec.shards):
        rows = range(s * per, min(spec.n_rows, (s + 1) * per))
        files = ShardFiles.of(jdir, s, spec.shards)
        ids = [row_id(jkey, s, p, 0) for p in rows]
        write_plan(files, jkey, chash, ids)
        table = shard_table(spec, jkey, s, rows, rng, chash)
        parquet, manifest = files.parquet, files.manifest
        digest = write_table_atomic(parquet, table)
        man = {
            "status": "complete",
            "n_rows": len(ids),
            "shard": s,
            "shards": spec.shards,
            "parquet": parquet.name,
            **digest,
            "config_hash": chash,
            "job_key": jkey,
            "seed": spec.seed,
            "schema_version": SCHEMA_VERSION,
            "config": config_for(spec),
            "provenance": provenance
            or {"versions": {"sensdir": "synthetic"}, "git_commit": None, "git_dirty": None, "host": "synthetic"},
        }
        write_json_atomic(manifest, man)
    return jdir


def make_sweep(sweep_dir: Path, specs: list[JobSpec]) -> Path:
    sweep_dir = Path(sweep_dir)
    (sweep_dir / "hydra").mkdir(parents=True, exist_ok=True)
    for spec in specs:
        write_job(sweep_dir, spec)
    return sweep_dir
