"""PNG figures of a reduced sweep (matplotlib, Agg backend).

- ``curves.png``: each metric (KL, L2, ...) per step for a few example perturbations per direction type, the
  max-slope step marked, and the per-type mean as dashed lines ([GP24] Fig. 2).
- ``ms_step.png``, ``plateau.png``: histogram and CDF per type of each metric's summaries,
  one figure per kind of summary (max-slope steps: [GP24] Fig. 3).
- ``error_pathology.png``: sae_error's KL ratio to each baseline per (SAE, hook) [G24, LH24].
- ``feature_l0.png``: mean KL against length per SAE [LH24].
The last two are drawn only where the sweep has those rows.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from sensdir.reduce.read import Group, SweepData  # noqa: E402
from sensdir.reduce.scalars import censored_column  # noqa: E402
from sensdir.reduce.stats import applies, lookup  # noqa: E402


def group_labels(groups: list[Group]) -> list[str]:
    """The direction type, plus whichever of schedule / SAE / hook the sweep varies."""
    varying = [f for f in ("schedule", "sae", "hook") if len({getattr(g, f) for g in groups}) > 1]
    return [" | ".join([g.direction, *(getattr(g, f) for f in varying)]) for g in groups]


def _colors(n: int):
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_figure(data: SweepData, path: Path) -> Path:
    labels, colors = group_labels(data.groups), _colors(len(data.groups))
    metrics = list(data.metrics.items())
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], metrics):
        ms = next((s["column"] for s in m["summaries"] if s["figure"] == "ms_step"), None)
        for gi, (label, color) in enumerate(zip(labels, colors)):
            for j, ex in enumerate(data.examples[gi]):
                y = ex.curves.get(name, np.zeros(0))
                ax.plot(np.arange(len(y)), y, color=color, lw=0.9, alpha=0.7, label=label if j == 0 else None)
                k = ex.summaries.get(ms, -1) if ms else -1
                if 0 <= k < len(y) and np.isfinite(y[k]):
                    ax.plot([k], [y[k]], "o", color=color, ms=5, mec="black", mew=0.6)
            mean = data.curves[gi].mean(name)
            if len(mean):
                ax.plot(np.arange(len(mean)), mean, "--", color=color, lw=1.6)
        ax.set_xlabel("step of the walk")
        ax.set_ylabel(f"{m['label']} ({m['unit']})" if m.get("unit") else m["label"])
        ax.set_title(f"{m['label']} per step (dots: max-slope step; dashed: mean)")
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def _hist_cdf(data: SweepData, summaries: list[dict], path: Path) -> Path | None:
    """Histogram and CDF per type of each summary; rows with no event inside the walk
    (censored, METHODS §10) are a bar of their own right of the axis, not a value on it."""
    labels, colors = group_labels(data.groups), _colors(len(data.groups))
    summaries = [s for s in summaries if any(applies(s, g) for g in data.groups) and s["column"] in data.scalars]
    if not summaries:
        return None
    fig, axes = plt.subplots(len(summaries), 2, figsize=(11, 3.8 * len(summaries)), squeeze=False)
    for row, s in enumerate(summaries):
        groups = [gi for gi, g in enumerate(data.groups) if applies(s, g)]
        hi = max((float(data.values(s["column"], gi).max()) for gi in groups if len(data.values(s["column"], gi))), default=1.0)
        width = max(1.0, np.ceil((hi + 1) / 60))
        edges = np.arange(-0.5, hi + 1.5, width)
        at = edges[-1] + 3 * width  # where the censored bars stand, side by side
        bar_w = 4 * width / max(1, len(groups))
        for j, gi in enumerate(groups):
            x, censored = data.with_flag(s["column"], censored_column(s), gi)
            if not len(x):
                continue
            censored = np.zeros(len(x), bool) if censored is None else censored
            dens = np.histogram(x[~censored], bins=edges)[0] / len(x)
            frac = float(censored.mean())
            label = f"{labels[gi]} (n={len(x)}, {frac:.0%} censored)"
            axes[row, 0].stairs(dens, edges, color=colors[gi], label=label, lw=1.4)
            axes[row, 0].bar(
                at - 2 * width + (j + 0.5) * bar_w, frac, width=bar_w, color=colors[gi], alpha=0.5, edgecolor=colors[gi]
            )
            cdf = np.append(np.cumsum(dens), 1.0)
            axes[row, 1].stairs(cdf, np.append(edges, at), color=colors[gi], lw=1.4, baseline=None)
        unit = s.get("unit", "steps")
        for ax, kind in ((axes[row, 0], "fraction of rows"), (axes[row, 1], "cumulative fraction")):
            ax.axvline(edges[-1] + 0.5 * width, color="grey", ls=":", lw=0.8)
            ticks = [t for t in ax.get_xticks() if 0 <= t <= edges[-1]]
            ax.set_xticks([*ticks, at], [f"{t:g}" for t in ticks] + ["censored"])
            ax.set_xlabel(f"{s['label']} ({unit})")
            ax.set_ylabel(kind)
        axes[row, 0].set_title(f"{s['label']}: histogram")
        axes[row, 1].set_title(f"{s['label']}: CDF")
        axes[row, 0].legend(fontsize=8)
    return _save(fig, path)


def error_pathology_figure(table: pa.Table, path: Path) -> Path | None:
    rows = [r for r in lookup(table, section="error_pathology", statistic="ratio") if r["value"] is not None]
    if not rows:
        return None
    sites = sorted({(r["sae"], r["hook"]) for r in rows})
    metrics = sorted({r["metric"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(sites) * len(metrics)), 4))
    w = 0.8 / len(metrics)
    for j, (m, color) in enumerate(zip(metrics, _colors(len(metrics)))):
        vals = [next((r["value"] for r in rows if (r["sae"], r["hook"]) == s and r["metric"] == m), np.nan) for s in sites]
        ax.bar(np.arange(len(sites)) + j * w - 0.4 + w / 2, vals, w, color=color, label=m.replace("kl_ratio_vs_", "vs "))
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(sites)), [f"{s}\n{h}" for s, h in sites], fontsize=8)
    ax.set_ylabel("KL(sae_error) / KL(baseline) (ratio)")
    ax.set_title("Error pathology: KL at the SAE error's length")
    ax.legend(fontsize=8)
    return _save(fig, path)


def feature_l0_figure(data: SweepData, table: pa.Table, path: Path) -> Path | None:
    rows = lookup(table, section="feature_l0")
    if not rows:
        return None
    keys = sorted({(r["sae"], r["direction"], r["hook"], r["schedule"]) for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, color in zip(keys, _colors(len(keys))):
        pts = sorted((r["x"], r["value"]) for r in rows if (r["sae"], r["direction"], r["hook"], r["schedule"]) == key)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=3, color=color, label=f"{key[0]} ({key[1]})")
    ax.set_xlabel("length ||A' - A|| (site activation units)")
    ax.set_ylabel("mean KL (nats)")
    ax.set_title("KL vs length per SAE")
    ax.legend(fontsize=8)
    return _save(fig, path)


def make_figures(data: SweepData, table: pa.Table, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    walks = bool(data.groups)  # a sweep of studies alone has no walk figures
    figs: dict[str, Path | None] = {
        "curves": curves_figure(data, out_dir / "curves.png") if walks else None,
        **{
            name: _hist_cdf(data, [s for s in data.summaries() if s["figure"] == name], out_dir / f"{name}.png")
            for name in dict.fromkeys(s["figure"] for s in data.summaries())
        },
        "error_pathology": error_pathology_figure(table, out_dir / "error_pathology.png"),
        "feature_l0": feature_l0_figure(data, table, out_dir / "feature_l0.png"),
    }
    return {k: v for k, v in figs.items() if v is not None}
