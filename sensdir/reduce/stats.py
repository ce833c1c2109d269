"""Statistics of a reduced sweep, as one tidy table (one value per row).

Columns: ``section`` (``summary``, ``error_pathology``, ``feature_l0``), the group
(``direction``, ``schedule``, ``sae``, ``hook``), ``metric``, ``statistic``, ``x`` (the
length, for curves; null otherwise), ``value`` and ``n`` (rows behind the value).

- summary: per direction type and (schedule, SAE, hook): mean, sd, median and a bootstrap
  percentile CI of the mean of every metric summary (``ms_step_kl``, ``ms_step_l2``,
  ``plateau_len``, ... as the shards' metric tables declare), and the
  two-sample Kolmogorov-Smirnov statistic and p-value against ``real`` on the same
  (schedule, SAE, hook) [GP24]; all of it over all rows and over the uncensored ones
  (``*_uncensored``), with the ``censored_fraction`` (METHODS §10). Plateau lengths only
  for absolute-step walks.
- target_facts: per type, mean and sd of the targets' facts (norms, anchor cosine, L0, ...).
- error_pathology: per (SAE, hook), mean KL at the natural length ||SAE(x) - x|| of
  ``sae_error`` and of each baseline walked to the same length, and their ratios [G24, LH24].
- feature_l0: per SAE, mean KL against mean grid length per step, for ``length`` grids [LH24].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from scipy import stats as sps

from sensdir.artifacts.schema import FACT_COLUMNS
from sensdir.reduce.diagnostics import diagnostic_rows
from sensdir.reduce.read import SweepData
from sensdir.reduce.scalars import censored_column

REFERENCE = "real"


def reference_of(direction: str) -> str:
    """The type a direction is compared against: ``real``, or for labelled variants such as
    ``plateau:synth_struct`` the variant that starts from real activations, ``plateau:real``."""
    family, sep, _ = direction.partition(":")
    return f"{family}:{REFERENCE}" if sep else REFERENCE


COLUMNS = ("section", "direction", "schedule", "sae", "hook", "metric", "statistic", "x", "value", "n")


def bootstrap_mean_ci(x: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean. Resamples are drawn as multinomial counts over the distinct
    values, which is the same distribution as resampling rows and costs O(distinct values)
    per resample, so 10^6 integer max-slope steps bootstrap in a moment."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0 or n_boot <= 0:
        return (float("nan"), float("nan"))
    vals, counts = np.unique(x, return_counts=True)
    n = len(x)
    means = np.empty(n_boot)
    chunk = max(1, min(n_boot, 2_000_000 // max(len(vals), 1)))
    for s in range(0, n_boot, chunk):
        m = min(chunk, n_boot - s)
        draws = rng.multinomial(n, counts / n, size=m)
        means[s : s + m] = draws @ vals / n
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if len(a) == 0 or len(b) == 0:
        return (float("nan"), float("nan"))
    r = sps.ks_2samp(a, b)
    return float(r.statistic), float(r.pvalue)


def _row(section, g, metric, statistic, value, n, x=None, direction=None) -> dict:
    return {
        "section": section,
        "direction": direction if direction is not None else g.direction,
        "schedule": g.schedule,
        "sae": g.sae,
        "hook": g.hook,
        "metric": metric,
        "statistic": statistic,
        "x": None if x is None else float(x),
        "value": None if value is None or not np.isfinite(value) else float(value),
        "n": int(n),
    }


def applies(summary: dict, group) -> bool:
    """Whether a summary means something on this group's walks (plateau lengths only on
    absolute-step walks, METHODS §10)."""
    kinds = summary.get("grid_kinds")
    return kinds is None or group.grid_kind in kinds


def _describe(g, metric: str, x: np.ndarray, rng, n_boot: int, suffix: str) -> list[dict]:
    n = len(x)
    if n == 0:
        return []
    lo, hi = bootstrap_mean_ci(x, n_boot, rng)
    values = {"mean": x.mean(), "sd": x.std(ddof=1) if n > 1 else np.nan, "median": np.median(x), "ci95_low": lo, "ci95_high": hi}
    return [_row("summary", g, metric, f"{k}{suffix}", v, n) for k, v in values.items()]


def _ks(g, metric: str, x: np.ndarray, y: np.ndarray, suffix: str) -> list[dict]:
    d, p = ks_2samp(x, y)
    return [
        _row("summary", g, metric, f"ks_vs_real{suffix}", d, len(x) + len(y)),
        _row("summary", g, metric, f"ks_pvalue_vs_real{suffix}", p, len(x) + len(y)),
    ]


def summary_rows(data: SweepData, n_boot: int, seed: int) -> list[dict]:
    """Per group and summary: statistics over all rows, and where rows can be censored (no
    event inside the walk, METHODS §10) the censored fraction and the same statistics over
    the uncensored rows (statistic names ending ``_uncensored``); KS against the reference
    on both, labelled likewise."""
    rng = np.random.default_rng(seed)
    index = {(g.stratum, g.direction): i for i, g in enumerate(data.groups)}
    rows = []
    for gi, g in enumerate(data.groups):
        ref = index.get((g.stratum, reference_of(g.direction)))
        for s in data.summaries():
            metric = s["column"]
            if metric not in data.scalars or not applies(s, g):
                continue
            x, censored = data.with_flag(metric, censored_column(s), gi)
            rows += _describe(g, metric, x, rng, n_boot, "")
            if ref is not None and ref != gi and len(x):
                rows += _ks(g, metric, x, data.with_flag(metric, censored_column(s), ref)[0], "")
            if censored is None or not len(x):
                continue
            rows.append(_row("summary", g, metric, "censored_fraction", censored.mean(), len(x)))
            rows += _describe(g, metric, x[~censored], rng, n_boot, "_uncensored")
            if ref is not None and ref != gi:
                y, y_censored = data.with_flag(metric, censored_column(s), ref)
                if y_censored is not None and (~censored).any() and (~y_censored).any():
                    rows += _ks(g, metric, x[~censored], y[~y_censored], "_uncensored")
    return rows


def fact_rows(data: SweepData) -> list[dict]:
    """What the targets are like, per group: mean and sd of each direction fact present
    (norms, achieved anchor cosine, L0, natural lengths) and of ||T|| / ||A||."""
    rows = []
    for gi, g in enumerate(data.groups):
        facts = {k: data.values(k, gi).astype(np.float64) for k in FACT_COLUMNS if k in data.scalars}
        if "target_norm" in data.scalars and "base_norm" in data.scalars:
            t, b = data.with_flag("target_norm", "base_norm", gi)
            if b is not None and len(t):
                facts["target_to_base_norm"] = t / b
        for name, v in facts.items():
            if len(v):
                rows.append(_row("target_facts", g, name, "mean", v.mean(), len(v)))
                rows.append(_row("target_facts", g, name, "sd", v.std(ddof=1) if len(v) > 1 else np.nan, len(v)))
    return rows


def error_pathology_rows(data: SweepData) -> list[dict]:
    """Mean KL at the natural length per direction, and the error type's ratio to each baseline,
    per (SAE, hook); empty where the sweep has no type in the role ``error``. Roles are the
    direction types' ``comparison_role``, read from the shards."""
    rows = []
    by_site: dict[tuple, dict[str, list[int]]] = {}
    for gi, g in enumerate(data.groups):
        if data.roles.get(g.direction) in ("error", "error_baseline"):
            by_site.setdefault((g.sae, g.hook), {}).setdefault(g.direction, []).append(gi)
    for dirs in (by_site[k] for k in sorted(by_site)):
        errors = [d for d in dirs if data.roles[d] == "error"]
        if not errors:
            continue
        means = {}
        for d, gis in dirs.items():
            v = np.concatenate([data.values("kl_natural", gi) for gi in gis]).astype(np.float64)
            means[d] = (v.mean() if len(v) else np.nan, len(v))
            rows.append(_row("error_pathology", data.groups[gis[0]], "kl_at_natural_length", "mean", means[d][0], len(v)))
        for e in errors:
            err, n_err = means[e]
            for b in sorted(d for d in dirs if data.roles[d] == "error_baseline"):
                base, n_b = means[b]
                ratio = err / base if base and np.isfinite(base) and base != 0 else np.nan
                rows.append(_row("error_pathology", data.groups[dirs[e][0]], f"kl_ratio_vs_{b}", "ratio", ratio, n_err + n_b))
    return rows


def feature_l0_rows(data: SweepData) -> list[dict]:
    rows = []
    for gi, g in enumerate(data.groups):
        if g.grid_kind != "length":
            continue
        c = data.curves[gi]
        kl, grid = c.mean("kl"), c.mean("grid")
        for k in range(min(len(kl), len(grid))):
            if np.isfinite(kl[k]) and np.isfinite(grid[k]):
                rows.append(_row("feature_l0", g, "kl", "mean_at_length", kl[k], c.counts["kl"][k], x=grid[k]))
    return rows


def stats_table(data: SweepData, n_boot: int = 1000, seed: int = 0, extra_rows: Sequence[dict] = ()) -> pa.Table:
    """``extra_rows``: the studies' own tidy rows (sensdir.reduce.studies)."""
    rows = (
        diagnostic_rows(data)
        + summary_rows(data, n_boot, seed)
        + fact_rows(data)
        + error_pathology_rows(data)
        + feature_l0_rows(data)
        + list(extra_rows)
    )
    schema = pa.schema(
        [(c, pa.string()) for c in COLUMNS[:7]] + [("x", pa.float64()), ("value", pa.float64()), ("n", pa.int64())]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def lookup(table: pa.Table, **where) -> list[dict]:
    """Rows of the tidy table matching every given column value (for tests, figures, HTML)."""
    return [r for r in table.to_pylist() if all(r.get(k) == v for k, v in where.items())]
