"""Streaming read of a sweep's shards: small per-row scalars, per-group sums of the curves.

Only the scalar summaries of each row (max-slope steps, plateau length, ...) are kept for the
whole sweep; the curves are read batch by batch and folded into per-group sums and counts per
step (nulls, the dropped steps, count as absent), so memory does not grow with the number of
steps. A handful of example rows per group keep their full curves. Which curves and summaries
a shard has is read from its metadata (the metric table the job wrote), not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from tqdm.auto import tqdm

from sensdir.artifacts.records import read_metadata
from sensdir.artifacts.schema import FACT_COLUMNS, direction_of, hook_of, metrics_of
from sensdir.reduce.arrays import last_valid, list_to_2d, value_at
from sensdir.reduce.completeness import Completeness, ShardFile
from sensdir.reduce.diagnostics import row_scalars
from sensdir.reduce.scalars import batch_scalars, summary_columns

BATCH_ROWS = 8192
NATURAL_METRIC = "kl"  # the error-pathology comparison reads KL at the natural length [G24]


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
    curves: dict[str, np.ndarray]  # metric -> its curve
    summaries: dict[str, int]  # summary column -> value


@dataclass
class SweepData:
    groups: list[Group]
    scalars: dict[str, np.ndarray]  # per row: "group" index, each summary column, "n_valid_steps", "kl_natural"
    curves: list[Curves]  # per group
    examples: list[list[Example]]  # per group
    configs: dict[str, dict[str, Any]]  # job_key -> resolved config
    provenance: dict[str, dict[str, Any]]  # job_key -> manifest provenance
    n_rows: int
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> {label, summaries}
    roles: dict[str, str] = field(default_factory=dict)  # direction label -> comparison role
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)  # job_key -> thresholds as resolved

    def values(self, name: str, group: int) -> np.ndarray:
        v = self.scalars[name][self.scalars["group"] == group]
        return v[~np.isnan(v)] if v.dtype.kind == "f" else v

    def with_flag(self, name: str, other: str, group: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``name``'s values of the group's rows that have one (float64), and beside them
        ``other``'s values of the same rows (as bool where ``other`` is a flag), or None where
        no row has ``other``."""
        rows = self.scalars["group"] == group
        v = self.scalars[name][rows].astype(np.float64)
        keep = ~np.isnan(v)
        if other not in self.scalars:
            return v[keep], None
        o = self.scalars[other][rows][keep].astype(np.float64)
        if np.isnan(o).any():
            return v[keep], None
        return v[keep], (o.astype(bool) if other.endswith("_censored") else o)

    def summaries(self) -> list[dict[str, str]]:
        """Every summary column of the sweep's metrics: column, figure, label."""
        return [s for m in self.metrics.values() for s in m["summaries"]]


def sae_label(cfg: dict[str, Any]) -> str:
    sae = cfg.get("sae") or {}
    if sae.get("source") == "none":
        return "none"
    if sae.get("source") == "disk" and sae.get("path"):
        return Path(sae["path"]).name
    release, sae_id = sae.get("release", "?"), sae.get("sae_id", "?")
    return sae_id if release == "embedded" else f"{release}:{sae_id}"


class _SweepReader:
    """Folds walk shards, batch by batch, into a ``SweepData``."""

    def __init__(self, comp: Completeness, n_examples: int):
        self.n_examples = n_examples
        self.groups: list[Group] = []
        self.index: dict[Group, int] = {}
        self.curves: list[Curves] = []
        self.examples: list[list[Example]] = []
        self.configs: dict[str, dict[str, Any]] = {}
        self.prov: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, str] = {}
        self.thresholds: dict[str, dict[str, Any]] = {}
        self.parts: list[dict[str, np.ndarray]] = []  # per batch: "group" and the scalar columns it has
        self.n_rows = 0
        # Of a duplicated row id, only the copy in its owner file (the first one seen) is used.
        self.dup_ids = pa.array(sorted(comp.duplicate_owner), type=pa.string())
        self.owned: dict[str, list[str]] = {}
        for rid, path in comp.duplicate_owner.items():
            self.owned.setdefault(path, []).append(rid)

    def read_file(self, sf: ShardFile, batch_rows: int, bar) -> None:
        meta = read_metadata(sf.path)
        cfg = meta.get("config") or (sf.manifest or {}).get("config") or {}
        jkey = meta.get("job_key") or sf.job_dir.name
        self.configs.setdefault(jkey, cfg)
        if sf.manifest and "provenance" in sf.manifest:
            self.prov.setdefault(jkey, sf.manifest["provenance"])
        metrics = metrics_of(meta)
        for name, m in metrics.items():
            self.metrics.setdefault(name, m)
        direction = direction_of(meta)
        if direction.get("role"):
            self.roles[direction["label"]] = direction["role"]
        if meta.get("thresholds"):
            self.thresholds.setdefault(jkey, meta["thresholds"])
        sae, hook = sae_label(cfg), hook_of(meta)
        dataset = ds.dataset(sf.path, format="parquet")
        names = set(dataset.schema.names)
        summaries = [s for m in metrics.values() for s in m["summaries"]]
        cols = [
            "row_id",
            "direction",
            "schedule",
            "grid_kind",
            "prompt_index",
            "target_index",
            *metrics,
            *summary_columns(summaries),
            "n_valid_steps",
            "grid",
            *FACT_COLUMNS,
        ]
        cols = [c for c in dict.fromkeys(cols) if c in names]
        skip = (self.dup_ids, pa.array(self.owned.get(str(sf.path), []), type=pa.string())) if len(self.dup_ids) else None
        for batch in dataset.to_batches(columns=cols, batch_size=batch_rows):
            bar.update(batch.num_rows)
            if skip is not None:
                rid = batch.column("row_id")
                drop = pc.and_(pc.is_in(rid, value_set=skip[0]), pc.invert(pc.is_in(rid, value_set=skip[1])))
                batch = batch.filter(pc.invert(drop))
            if batch.num_rows:
                self._batch(batch, list(metrics), summaries, sae, hook)

    def _column(self, batch: pa.RecordBatch, name: str, fill: Any) -> np.ndarray:
        if name in batch.schema.names:
            return batch.column(name).to_numpy(zero_copy_only=False)
        return np.full(batch.num_rows, fill, dtype=object if isinstance(fill, str) else np.float32)

    def _group_ids(self, batch: pa.RecordBatch, sae: str, hook: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(per-row index into the unique keys, the keys' group ids) of a batch."""
        direction = self._column(batch, "direction", "?").astype(str)
        schedule = self._column(batch, "schedule", "?").astype(str)
        kind = self._column(batch, "grid_kind", "?").astype(str)
        keys = np.char.add(np.char.add(direction, "\x1f"), np.char.add(schedule, np.char.add("\x1f", kind)))
        uniq, inv = np.unique(keys, return_inverse=True)
        gids = []
        for key in uniq:
            d, s, k = str(key).split("\x1f")
            g = Group(d, s, sae, hook, k)
            if g not in self.index:
                self.index[g] = len(self.groups)
                self.groups.append(g)
                self.curves.append(Curves())
                self.examples.append([])
            gids.append(self.index[g])
        return kind, inv, gids

    def _batch(self, batch: pa.RecordBatch, metrics: list[str], summaries: list[dict[str, Any]], sae: str, hook: str) -> None:
        summary_cols = [s["column"] for s in summaries]
        n = batch.num_rows
        self.n_rows += n
        curves = {m: list_to_2d(batch.column(m)) for m in metrics}
        grid = list_to_2d(batch.column("grid")) if "grid" in batch.schema.names else None
        kind, inv, gids = self._group_ids(batch, sae, hook)
        for u, gid in enumerate(gids):
            rows = inv == u
            for m, y in curves.items():
                self.curves[gid].add(m, y[rows])
            if grid is not None and self.groups[gid].grid_kind == "length":
                self.curves[gid].add("grid", grid[rows])
            self._examples(gid, batch, rows, curves, summary_cols)
        part = {
            "group": np.asarray(gids, np.int32)[inv],
            "kl_natural": self._kl_natural(batch, curves.get(NATURAL_METRIC), grid, kind),
            **batch_scalars(batch, summaries),
            **row_scalars(batch, curves.get("kl"), curves.get("l2"), grid, kind),
        }
        self.parts.append(part)

    def _examples(self, gid: int, batch: pa.RecordBatch, rows: np.ndarray, curves: dict, summary_cols: list[str]) -> None:
        have = self.examples[gid]
        if len(have) >= self.n_examples:
            return
        take = np.flatnonzero(rows)[: self.n_examples - len(have)]
        ids = batch.column("row_id").take(pa.array(take)).to_pylist()
        sums = {c: batch.column(c).to_numpy()[take] for c in summary_cols if c in batch.schema.names}
        for j, (t, rid) in enumerate(zip(take, ids)):
            have.append(Example(rid, {m: y[t].copy() for m, y in curves.items()}, {c: int(v[j]) for c, v in sums.items()}))

    @staticmethod
    def _kl_natural(batch: pa.RecordBatch, kl: np.ndarray | None, grid: np.ndarray | None, kind: np.ndarray) -> np.ndarray:
        """KL at the natural length (sae_error's ||SAE(A) - A|| and the baselines walked to it)."""
        n = batch.num_rows
        nat = np.full(n, np.nan, np.float32)
        if kl is None or "natural_length" not in batch.schema.names:
            return nat
        nl = batch.column("natural_length").to_numpy(zero_copy_only=False).astype(np.float64)
        have = ~np.isnan(nl)
        rel = kind == "t"
        # relative walks end at the target: t = 1 is the natural length
        nat[have & rel] = last_valid(kl[have & rel])
        absw = have & ~rel
        if absw.any() and grid is not None:
            nat[absw] = value_at(grid[absw], kl[absw], nl[absw])
        return nat

    def finish(self) -> SweepData:
        names = dict.fromkeys(k for part in self.parts for k in part)
        scalars = {k: np.concatenate([p.get(k, np.full(len(p["group"]), np.nan, np.float32)) for p in self.parts]) for k in names}
        scalars.setdefault("group", np.zeros(0, np.int32))
        # A stable order, whatever order the files came in: by (schedule, SAE, hook), real first.
        groups = self.groups
        order = sorted(
            range(len(groups)),
            key=lambda i: (groups[i].stratum, groups[i].direction != "real", groups[i].direction, groups[i].grid_kind),
        )
        new_index = np.empty(max(len(groups), 1), np.int32)
        new_index[order] = np.arange(len(order), dtype=np.int32)
        scalars["group"] = new_index[scalars["group"]] if len(groups) else scalars["group"]
        return SweepData(
            [groups[i] for i in order],
            scalars,
            [self.curves[i] for i in order],
            [self.examples[i] for i in order],
            self.configs,
            self.prov,
            self.n_rows,
            self.metrics,
            self.roles,
            self.thresholds,
        )


def read_sweep(comp: Completeness, n_examples: int = 3, progress: bool = True, batch_rows: int = BATCH_ROWS) -> SweepData:
    reader = _SweepReader(comp, n_examples)
    walk_shards = [sf for sf in comp.shards if sf.kind == "walk"]
    total = sum(sf.n_rows for sf in walk_shards)
    bar = tqdm(total=total, desc="reduce: reading shards", unit="row", unit_scale=True, disable=not progress)
    for sf in walk_shards:
        reader.read_file(sf, batch_rows, bar)
    bar.close()
    return reader.finish()
