"""The reduce's part for ``error_correction`` walks: the exponent p per source, METHODS §11 [FH26].

For every walk shard of the ``error_correction`` direction type, each row's length to each KL
level of its config (``direction.levels``) is read off its ``kl`` and ``grid`` columns
(:func:`sensdir.reduce.ec_fit.lengths_to_levels`); rows are gathered into (base, pair) rows
across angles, per group (direction label = source, schedule, SAE, hook), and ``p`` is
estimated per group and level by the closed form and the all-angle fit, with bootstrap CIs
(:mod:`sensdir.reduce.ec_fit`). Rows whose pair could not be drawn (``pair_ok`` false) are left
out.

Tidy rows (``sensdir.reduce.stats`` columns):

- section ``error_correction``, ``x`` = the KL level: metrics ``p_closed_form`` and ``p_fit``
  (statistics ``estimate``, ``ci95_low``, ``ci95_high``; ``n`` = (base, pair) rows used),
  ``log2_length_ratio_45`` (``mean``), ``censored_fraction`` (``fraction``, ``n`` = all rows);
- section ``error_correction_curves``, ``x`` = the angle in degrees: metric
  ``relative_length@kl=<level>``, statistics ``observed``, ``model_p2`` and ``model_pfit``:
  ``(<L(theta)^-2> / <L_pure^-2>)^(-1/2)`` over the rows (the pooled length to the level, relative
  to the pure directions'), measured and under the L^p model.

Figure ``error_correction.png``: those curves, one panel per group. Table ``error_correction``
(for the report): one line per group and level with both estimates and their CIs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from sensdir.artifacts.records import read_metadata
from sensdir.reduce.arrays import list_to_2d
from sensdir.reduce.completeness import Completeness
from sensdir.reduce.ec_fit import AngleRows, PEstimate, estimate_p, lengths_to_levels
from sensdir.reduce.read import sae_label

DIRECTION = "error_correction"
_COLS = ("row_id", "direction", "schedule", "prompt_index", "pair_index", "angle_deg", "pair_ok", "grid", "kl")


@dataclass
class _Group:
    key: tuple[str, str, str, str]  # direction label, schedule, sae, hook
    angles: tuple[float, ...]
    levels: tuple[float, ...]
    rows: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)  # (job, base, pair) -> [angles, levels]

    def add(self, job: str, base: np.ndarray, pair: np.ndarray, angle: np.ndarray, len_NL: np.ndarray) -> None:
        for b, k, a, lens in zip(base.tolist(), pair.tolist(), angle.tolist(), len_NL):
            hit = np.flatnonzero(np.isclose(self.angles, a))
            if not len(hit):
                continue
            cell = self.rows.setdefault((job, b, k), np.full((len(self.angles), len(self.levels)), np.nan))
            cell[hit[0]] = lens

    def angle_rows(self, j: int) -> AngleRows:
        length = np.stack([v[:, j] for v in self.rows.values()]) if self.rows else np.zeros((0, len(self.angles)))
        return AngleRows(np.radians(np.asarray(self.angles)), length)


def _read(comp: Completeness) -> list[_Group]:
    groups: dict[tuple, _Group] = {}
    seen: set[str] = set()
    for sf in comp.shards:
        if sf.kind != "walk":
            continue
        meta = read_metadata(sf.path)
        cfg = meta.get("config") or (sf.manifest or {}).get("config") or {}
        dcfg = cfg.get("direction") or {}
        if dcfg.get("name") != DIRECTION:
            continue
        dataset = ds.dataset(sf.path, format="parquet")
        if not set(_COLS) <= set(dataset.schema.names):
            continue  # e.g. a sweep without the kl metric: nothing to measure
        job = meta.get("job_key") or sf.job_dir.name
        sae, hook = sae_label(cfg), (cfg.get("site") or {}).get("hook") or "sae's"
        levels, angles = tuple(float(x) for x in dcfg["levels"]), tuple(float(x) for x in dcfg["angles"])
        for batch in dataset.to_batches(columns=list(_COLS)):
            cols = {c: batch.column(c) for c in _COLS}
            rid = cols["row_id"].to_pylist()
            keep = np.array([r not in seen for r in rid]) & cols["pair_ok"].to_numpy(zero_copy_only=False).astype(bool)
            seen.update(rid)
            if not keep.any():
                continue
            lens = lengths_to_levels(list_to_2d(cols["grid"]), list_to_2d(cols["kl"]), levels)
            label = np.asarray(cols["direction"].to_pylist(), dtype=object)
            sched = np.asarray(cols["schedule"].to_pylist(), dtype=object)
            for key in {(str(d), str(s)) for d, s in zip(label[keep], sched[keep])}:
                sel = keep & (label == key[0]) & (sched == key[1])
                g = groups.setdefault((*key, sae, hook), _Group((*key, sae, hook), angles, levels))
                num = {c: cols[c].to_numpy(zero_copy_only=False)[sel] for c in ("prompt_index", "pair_index", "angle_deg")}
                g.add(job, num["prompt_index"], num["pair_index"], num["angle_deg"], lens[sel])
    return [groups[k] for k in sorted(groups)]


def _row(section: str, key: tuple, metric: str, statistic: str, value: float, n: int, x: float) -> dict[str, Any]:
    d, s, sae, hook = key
    ok = value is not None and np.isfinite(value)
    return {
        "section": section,
        "direction": d,
        "schedule": s,
        "sae": sae,
        "hook": hook,
        "metric": metric,
        "statistic": statistic,
        "x": float(x),
        "value": float(value) if ok else None,
        "n": int(n),
    }


def _p_rows(key: tuple, level: float, e: PEstimate) -> list[dict]:
    rows = []
    for metric, est, (lo, hi) in (("p_closed_form", e.p_closed, e.p_closed_ci), ("p_fit", e.p_fit, e.p_fit_ci)):
        for stat, v in (("estimate", est), ("ci95_low", lo), ("ci95_high", hi)):
            rows.append(_row("error_correction", key, metric, stat, v, e.n_rows, level))
    rows.append(_row("error_correction", key, "log2_length_ratio_45", "mean", e.log2_ratio45, e.n_rows, level))
    frac = 1 - e.n_rows / e.n_total if e.n_total else float("nan")
    rows.append(_row("error_correction", key, "censored_fraction", "fraction", frac, e.n_total, level))
    return rows


def _curve_rows(key: tuple, level: float, rows: AngleRows, p_fit: float) -> list[dict]:
    ok = rows.usable()
    R = len(ok.length_RA)
    if not R:
        return []
    metric = f"relative_length@kl={level:g}"
    curves = {"observed": ok.relative_length(), "model_p2": ok.relative_length(2.0)}
    if np.isfinite(p_fit):
        curves["model_pfit"] = ok.relative_length(p_fit)
    deg = np.degrees(ok.theta_A)
    return [
        _row("error_correction_curves", key, metric, stat, float(v), R, x) for stat, c in curves.items() for x, v in zip(deg, c)
    ]


def error_correction_results(
    comp: Completeness, out_dir: Path, n_boot: int = 1000, seed: int = 0
) -> tuple[list[dict], dict[str, Path], dict[str, pa.Table]]:
    """(tidy rows, figures, report tables) of the sweep's error-correction walks; all empty
    when it has none."""
    groups = _read(comp)
    if not groups:
        return [], {}, {}
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    wide: list[dict[str, Any]] = []
    for g in groups:
        for j, level in enumerate(g.levels):
            ar = g.angle_rows(j)
            e = estimate_p(ar, n_boot, rng)
            rows += _p_rows(g.key, level, e) + _curve_rows(g.key, level, ar, e.p_fit)
            wide.append(
                {"direction": g.key[0], "schedule": g.key[1], "sae": g.key[2], "hook": g.key[3], "kl_level": level,
                 "p_fit": e.p_fit, "p_fit_ci95": f"[{e.p_fit_ci[0]:.3g}, {e.p_fit_ci[1]:.3g}]",
                 "p_closed_form": e.p_closed, "p_closed_ci95": f"[{e.p_closed_ci[0]:.3g}, {e.p_closed_ci[1]:.3g}]",
                 "log2_ratio_45": e.log2_ratio45, "n_pairs": e.n_rows, "n_censored": e.n_total - e.n_rows}
            )  # fmt: skip
    from sensdir.reduce.ec_figure import error_correction_figure

    fig = error_correction_figure(rows, out_dir / "error_correction.png")
    return rows, ({"error_correction": fig} if fig is not None else {}), {"error_correction": pa.Table.from_pylist(wide)}
