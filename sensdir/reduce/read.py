"""Streaming read of a sweep's shards: small per-row scalars, per-group sums of the curves.

Only the scalar summaries of each row (max-slope steps, plateau length, ...) are kept for the
whole sweep; the ``kl``/``l2`` step arrays are read batch by batch and folded into per-group
sums and counts per step (nulls, the dropped steps, count as absent), so memory does not grow
with the number of steps. A handful of example rows per group keep their full curves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from sensdir.reduce.completeness import Completeness

SCALARS = ("ms_step_kl", "ms_step_l2", "plateau_len", "n_valid_steps")
GROUP_FIELDS = ("direction", "schedule", "sae", "hook")
BATCH_ROWS = 8192


@dataclass(frozen=True)
class Group:
    """Rows reduced together: one direction type on one (schedule, SAE, hook)."""

    direction: str
    schedule: str
    sae: str
    hook: str
    grid_kind: str

    @property
    def stratum(self) -> tuple[str, str, str]:
        return (self.schedule, self.sae, self.hook)


@dataclass
class Curves:
    """Per-step sums and counts of one group's curves."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, x_NK: np.ndarray) -> None:
        ok = ~np.isnan(x_NK)
        s = np.where(ok, x_NK, 0.0).sum(0, dtype=np.float64)
        c = ok.sum(0)
        if name not in self.sums:
            self.sums[name] = np.zeros(0)
            self.counts[name] = np.zeros(0, dtype=np.int64)
        k = max(len(s), len(self.sums[name]))
        for store, add in ((self.sums, s), (self.counts, c)):
            cur = store[name]
            if len(cur) < k:
                cur = np.concatenate([cur, np.zeros(k - len(cur), dtype=cur.dtype)])
            cur[: len(add)] += add
            store[name] = cur

    def mean(self, name: str) -> np.ndarray:
        if name not in self.sums:
            return np.zeros(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts[name] > 0, self.sums[name] / np.maximum(self.counts[name], 1), np.nan)


@dataclass
class Example:
    row_id: str
    kl: np.ndarray
    l2: np.ndarray
    ms_step_kl: int
    ms_step_l2: int


@dataclass
class SweepData:
    groups: list[Group]
    scalars: dict[str, np.ndarray]  # per row: "group" index, SCALARS, "kl_natural" (nan where n/a)
    curves: list[Curves]  # per group
    examples: list[list[Example]]  # per group
    configs: dict[str, dict[str, Any]]  # job_key -> resolved config
    provenance: dict[str, dict[str, Any]]  # job_key -> manifest provenance
    n_rows: int

    def values(self, name: str, group: int) -> np.ndarray:
        v = self.scalars[name][self.scalars["group"] == group]
        return v[~np.isnan(v)] if v.dtype.kind == "f" else v


def sae_label(cfg: dict[str, Any]) -> str:
    sae = cfg.get("sae") or {}
    if sae.get("source") == "disk" and sae.get("path"):
        return Path(sae["path"]).name
    release, sae_id = sae.get("release", "?"), sae.get("sae_id", "?")
    return sae_id if release == "embedded" else f"{release}:{sae_id}"


def file_metadata(path: Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    try:
        return json.loads(meta.get(b"sensdir", b"{}"))
    except ValueError:
        return {}


def list_to_2d(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A list<float> column as an [N, K] float array, NaN for nulls and padding."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    vals = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    k = int(lengths.max())
    if (lengths == k).all():
        return vals.reshape(n, k)
    out = np.full((n, k), np.nan, np.float32)
    rows = np.repeat(np.arange(n), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    cols = np.arange(len(vals)) - np.repeat(starts, lengths)
    out[rows, cols] = vals
    return out


def value_at(grid_NK: np.ndarray, y_NK: np.ndarray, x_N: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row's curve y(grid) at x (valid steps taken as a prefix;
    clamped to the first / last valid step)."""
    valid = ~np.isnan(y_NK) & ~np.isnan(grid_NK)
    nvalid = valid.sum(1)
    g = np.where(valid, grid_NK, np.inf)
    j = (g <= x_N[:, None]).sum(1)
    lo = np.clip(j - 1, 0, np.maximum(nvalid - 1, 0))
    hi = np.clip(j, 0, np.maximum(nvalid - 1, 0))
    r = np.arange(len(x_N))
    g0, g1, y0, y1 = grid_NK[r, lo], grid_NK[r, hi], y_NK[r, lo], y_NK[r, hi]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(g1 > g0, (x_N - g0) / (g1 - g0), 0.0)
    out = y0 + np.clip(w, 0, 1) * (y1 - y0)
    return np.where(nvalid > 0, out, np.nan)


def last_valid(y_NK: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(y_NK)
    idx = np.where(ok.any(1), y_NK.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1), 0)
    out = y_NK[np.arange(len(y_NK)), idx]
    return np.where(ok.any(1), out, np.nan)


def read_sweep(comp: Completeness, n_examples: int = 3, progress: bool = True, batch_rows: int = BATCH_ROWS) -> SweepData:
    groups: list[Group] = []
    index: dict[Group, int] = {}
    curves: list[Curves] = []
    examples: list[list[Example]] = []
    configs: dict[str, dict[str, Any]] = {}
    prov: dict[str, dict[str, Any]] = {}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("group", *SCALARS, "kl_natural")}

    dup_ids = pa.array(sorted(comp.duplicate_owner), type=pa.string())
    owned: dict[str, list[str]] = {}
    for rid, path in comp.duplicate_owner.items():
        owned.setdefault(path, []).append(rid)

    walk_shards = [sf for sf in comp.shards if sf.kind == "walk"]
    total = sum(sf.n_rows for sf in walk_shards)
    bar = tqdm(total=total, desc="reduce: reading shards", unit="row", unit_scale=True, disable=not progress)
    n_rows = 0
    for sf in walk_shards:
        meta = file_metadata(sf.path)
        cfg = meta.get("config") or (sf.manifest or {}).get("config") or {}
        jkey = meta.get("job_key") or sf.job_dir.name
        configs.setdefault(jkey, cfg)
        if sf.manifest and "provenance" in sf.manifest:
            prov.setdefault(jkey, sf.manifest["provenance"])
        # a site left to the SAE (site.hook null) is the SAE's hook: the sae label says which
        sae, hook = sae_label(cfg), (cfg.get("site") or {}).get("hook") or "sae's"
        dataset = ds.dataset(sf.path, format="parquet")
        names = set(dataset.schema.names)
        has_nat = "natural_length" in names
        cols = ["row_id", "direction", "schedule", "grid_kind", "kl", "l2", *SCALARS]
        if has_nat:
            cols.append("natural_length")
        first_kind = dataset.head(1, columns=["grid_kind"]).column("grid_kind").to_pylist()
        need_grid = has_nat or "length" in first_kind
        if need_grid:
            cols.append("grid")
        cols = [c for c in cols if c in names]
        # Of a duplicated row id, only the copy in its owner file (the first one seen) is used.
        skip = (dup_ids, pa.array(owned.get(str(sf.path), []), type=pa.string())) if len(dup_ids) else None
        for batch in dataset.to_batches(columns=cols, batch_size=batch_rows):
            bar.update(batch.num_rows)
            if skip is not None:
                rid = batch.column("row_id")
                drop = pc.and_(pc.is_in(rid, value_set=skip[0]), pc.invert(pc.is_in(rid, value_set=skip[1])))
                batch = batch.filter(pc.invert(drop))
            n = batch.num_rows
            if n == 0:
                continue
            n_rows += n
            kl, l2 = list_to_2d(batch.column("kl")), list_to_2d(batch.column("l2"))
            grid = list_to_2d(batch.column("grid")) if need_grid else None
            direction = batch.column("direction").to_numpy(zero_copy_only=False)
            schedule = batch.column("schedule").to_numpy(zero_copy_only=False) if "schedule" in cols else np.full(n, "?", object)
            kind = batch.column("grid_kind").to_numpy(zero_copy_only=False) if "grid_kind" in cols else np.full(n, "?", object)
            keys = np.char.add(np.char.add(direction.astype(str), "\x1f"), np.char.add(schedule.astype(str), np.char.add("\x1f", kind.astype(str))))
            uniq, inv = np.unique(keys, return_inverse=True)
            gids = np.empty(len(uniq), np.int64)
            for u, key in enumerate(uniq):
                d, s, k = str(key).split("\x1f")
                g = Group(d, s, sae, hook, k)
                if g not in index:
                    index[g] = len(groups)
                    groups.append(g)
                    curves.append(Curves())
                    examples.append([])
                gid = gids[u] = index[g]
                rows = inv == u
                c = curves[gid]
                c.add("kl", kl[rows])
                c.add("l2", l2[rows])
                if grid is not None and k == "length":
                    c.add("grid", grid[rows])
                if len(examples[gid]) < n_examples:
                    take = np.flatnonzero(rows)[: n_examples - len(examples[gid])]
                    ids = batch.column("row_id").take(pa.array(take)).to_pylist()
                    ms_kl = batch.column("ms_step_kl").to_numpy()[take]
                    ms_l2 = batch.column("ms_step_l2").to_numpy()[take]
                    for t, rid_, a, b in zip(take, ids, ms_kl, ms_l2):
                        examples[gid].append(Example(rid_, kl[t].copy(), l2[t].copy(), int(a), int(b)))
            parts["group"].append(gids[inv].astype(np.int32))
            for name in SCALARS:
                if name in cols:
                    parts[name].append(batch.column(name).to_numpy(zero_copy_only=False).astype(np.float32))
                else:
                    parts[name].append(np.full(n, np.nan, np.float32))
            nat = np.full(n, np.nan, np.float32)
            if has_nat:
                nl = batch.column("natural_length").to_numpy(zero_copy_only=False).astype(np.float64)
                have = ~np.isnan(nl)
                if have.any():
                    rel = kind == "t"
                    # relative walks end at the target: t = 1 is the natural length
                    nat[have & rel] = last_valid(kl[have & rel])
                    absw = have & ~rel
                    if absw.any():
                        nat[absw] = value_at(grid[absw], kl[absw], nl[absw])
            parts["kl_natural"].append(nat)
    bar.close()
    scalars = {k: (np.concatenate(v) if v else np.zeros(0, np.float32 if k != "group" else np.int32)) for k, v in parts.items()}
    # A stable order, whatever order the files came in: by (schedule, SAE, hook), real first.
    order = sorted(range(len(groups)), key=lambda i: (groups[i].stratum, groups[i].direction != "real", groups[i].direction, groups[i].grid_kind))
    new_index = np.empty(max(len(groups), 1), np.int32)
    new_index[order] = np.arange(len(order), dtype=np.int32)
    scalars["group"] = new_index[scalars["group"]] if len(groups) else scalars["group"]
    return SweepData(
        [groups[i] for i in order], scalars, [curves[i] for i in order], [examples[i] for i in order], configs, prov, n_rows
    )
