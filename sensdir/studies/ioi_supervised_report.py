"""The ``ioi_supervised`` study's report (METHODS §7): tidy rows per SAE and a figure.

Kept apart from the study so that the measurement and its presentation can each be read alone.
"""

from __future__ import annotations

from pathlib import Path

# the edit methods compared, in the order the study plans and the figure draws them
METHODS_EDIT = ("clean", "patch", "supervised", "sae")


def summarize_tables(tables, out_dir: Path):
    rows, jobs = [], []
    for _manifest, table in tables:
        recs = table.to_pylist()
        if not recs:
            continue
        sae, hook = recs[0]["sae"], recs[0]["hook"]
        jobs.append((sae, hook, recs))

        def tidy(metric, statistic, value, n, sae=sae, hook=hook):
            rows.append(
                {
                    "section": "ioi_supervised",
                    "direction": None,
                    "schedule": None,
                    "sae": sae,
                    "hook": hook,
                    "metric": metric,
                    "statistic": statistic,
                    "x": None,
                    "value": None if value is None else float(value),
                    "n": None if n is None else int(n),
                }
            )

        for r in recs:
            if r["kind"] == "ld":
                tidy("ld", r["method"], r["ld"], r["n"])
                if r["method"] in ("supervised", "sae"):
                    tidy("ld_recovered", r["method"], r["ld_recovered"], r["n"])
                    tidy("fvu", r["method"], r["fvu"], r["n"])
            elif r["kind"] == "edit":
                for col in ("agree_cf", "agree_cf_names", "agree_patch", "kl_cf"):
                    tidy(f"edit_{col}/{r['attribute']}", r["method"], r[col], r["n"])
        for a in sorted({r["attribute"] for r in recs if r["kind"] == "f1"}):
            f1s = [r["f1"] for r in recs if r["kind"] == "f1" and r["attribute"] == a and r["n"]]
            if f1s:
                tidy(f"best_f1/{a}", "mean", sum(f1s) / len(f1s), len(f1s))
                tidy(f"best_f1/{a}", "min", min(f1s), len(f1s))
                tidy(f"best_f1/{a}", "max", max(f1s), len(f1s))
                triv = [r["f1_trivial"] for r in recs if r["kind"] == "f1" and r["attribute"] == a and r["n"]]
                tidy(f"best_f1/{a}", "trivial_mean", sum(triv) / len(triv), len(triv))
    if not jobs:
        return rows, {}
    return rows, {"ioi_supervised": _figure(jobs, Path(out_dir))}


def _figure(jobs, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(
        len(jobs), 3, figsize=(14, 3.4 * len(jobs)), squeeze=False, gridspec_kw={"width_ratios": [2.5, 2.5, 1.3]}
    )
    colors = {"clean": "#bbbbbb", "patch": "#555555", "supervised": "#1f77b4", "sae": "#ff7f0e"}
    panels = (("agree_cf_names", "agreement with p' (top name)"), ("agree_patch", "agreement with patching p'"))
    for (sae, hook, recs), row in zip(jobs, axes):
        edits = [r for r in recs if r["kind"] == "edit"]
        attrs = list(dict.fromkeys(r["attribute"] for r in edits))
        x = np.arange(len(attrs))
        w = 0.8 / len(METHODS_EDIT)
        for ax, (col, ylabel) in zip(row[:2], panels):
            for j, m in enumerate(METHODS_EDIT):
                vals = [next((r[col] for r in edits if r["attribute"] == a and r["method"] == m), np.nan) for a in attrs]
                ax.bar(x + (j - (len(METHODS_EDIT) - 1) / 2) * w, vals, w, label=m, color=colors[m])
            ax.set_xticks(x, attrs)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(ylabel)
            ax.set_title(f"edits at {hook} ({sae})", fontsize=8)
        row[0].legend(fontsize=7, ncols=4, loc="upper center")
        ax2 = row[2]
        lds = {r["method"]: r["ld_recovered"] for r in recs if r["kind"] == "ld"}
        ms = ["supervised", "sae"]
        ax2.bar(ms, [lds.get(m, np.nan) for m in ms], color=[colors[m] for m in ms])
        ax2.axhline(1.0, color="k", lw=0.8, ls="--")
        ax2.set_ylabel("logit diff recovered")
        ax2.set_title("reconstruction vs mean ablation", fontsize=9)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ioi_supervised.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
