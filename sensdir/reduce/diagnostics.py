"""Whether the model shows activation plateaus at all (METHODS §10), before any blowup or
plateau number is read.

- **Plateau index** at interpolation weight t: the median over base prompts of
  KL_real(t) / KL_random(t), both walks from the same base prompt (relative schedule; random =
  an N(mu, Sigma) target). Well below 1 on a model with plateaus; near 1, the blowup and plateau
  numbers carry no signal.
- **L2 curvature**: the median of l2[20] / (2 l2[10]) per type: 1 when L2 grows linearly from
  the first step, well below 1 for a flat start.

The reader keeps, per row, KL at the t below (interpolated on the row's grid), L2 at steps 10
and 20 and the row's (prompt, target) index; this module pairs and summarises them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sensdir.reduce.arrays import value_at

T_POINTS = (0.1, 0.2, 0.3)
CURVATURE_STEPS = (10, 20)
REAL, RANDOM = "real", "random"


def kl_key(t: float) -> str:
    return f"kl_at_t{t:g}"


def row_scalars(
    batch: pa.RecordBatch, kl_NK: np.ndarray | None, l2_NK: np.ndarray | None, grid_NK: np.ndarray | None, kind: np.ndarray
) -> dict[str, np.ndarray]:
    """The per-row numbers the diagnostics need, NaN where they do not apply (not a relative
    walk, a walk shorter than 21 steps)."""
    n = batch.num_rows
    out: dict[str, np.ndarray] = {}
    for name in ("prompt_index", "target_index"):
        if name in batch.schema.names:
            out[name] = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
    relative = kind == "t"
    if kl_NK is not None and grid_NK is not None:
        for t in T_POINTS:
            v = np.full(n, np.nan, np.float32)
            if relative.any():
                v[relative] = value_at(grid_NK[relative], kl_NK[relative], np.full(int(relative.sum()), t))
            out[kl_key(t)] = v
    if l2_NK is not None and l2_NK.shape[1] > max(CURVATURE_STEPS):
        for k in CURVATURE_STEPS:
            out[f"l2_at_step{k}"] = l2_NK[:, k].astype(np.float32)
    return out


def _row(g, metric: str, statistic: str, value: float, n: int, x: float | None = None) -> dict[str, Any]:
    ok = value is not None and np.isfinite(value)
    return {"section": "diagnostics", "direction": g.direction, "schedule": g.schedule, "sae": g.sae, "hook": g.hook,
            "metric": metric, "statistic": statistic, "x": x, "value": float(value) if ok else None, "n": int(n)}  # fmt: skip


def _paired(data, real: int, rand: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """KL of the real and random rows of the same (prompt, target), both present."""
    s = data.scalars

    def by_row(gi: int) -> dict[tuple[float, float], float]:
        rows = (s["group"] == gi) & ~np.isnan(s[key])
        return dict(zip(zip(s["prompt_index"][rows], s["target_index"][rows]), s[key][rows]))

    a, b = by_row(real), by_row(rand)
    common = sorted(set(a) & set(b))
    return np.array([a[c] for c in common], np.float64), np.array([b[c] for c in common], np.float64)


def diagnostic_rows(data) -> list[dict]:
    """Plateau index per stratum with paired real and random relative walks; L2 curvature per
    relative group."""
    rows: list[dict] = []
    if "prompt_index" not in data.scalars:
        return rows
    index = {(g.stratum, g.direction): i for i, g in enumerate(data.groups)}
    for gi, g in enumerate(data.groups):
        if g.grid_kind != "t":
            continue
        if g.direction == REAL and (g.stratum, RANDOM) in index:
            for t in T_POINTS:
                if kl_key(t) not in data.scalars:
                    continue
                a, b = _paired(data, gi, index[(g.stratum, RANDOM)], kl_key(t))
                ok = b > 0
                ratio = np.median(a[ok] / b[ok]) if ok.any() else np.nan
                rows.append(_row(g, "plateau_index", "median_kl_real_over_random", ratio, int(ok.sum()), x=t))
        if all(f"l2_at_step{k}" in data.scalars for k in CURVATURE_STEPS):
            rows_g = data.scalars["group"] == gi
            l10, l20 = (data.scalars[f"l2_at_step{k}"][rows_g].astype(np.float64) for k in CURVATURE_STEPS)
            ok = (l10 > 0) & np.isfinite(l20)
            curv = np.median(l20[ok] / (2 * l10[ok])) if ok.any() else np.nan
            rows.append(_row(g, "l2_curvature", "median_l2_20_over_2_l2_10", curv, int(ok.sum())))
    return rows
