"""The ``absorption`` study's report (METHODS §6): tidy rows per SAE and letter, and figures.

Kept apart from the study so that the measurement and its presentation can each be read alone.
"""

from __future__ import annotations

import math
from pathlib import Path

from sensdir.tasks.first_letter import LETTERS


def _tidy(sae: str, hook: str, metric: str, statistic: str, x: float, value, n: int) -> dict:
    value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    where = {"section": "absorption", "direction": None, "schedule": None, "sae": sae, "hook": hook}
    return {**where, "metric": metric, "statistic": statistic, "x": x, "value": value, "n": n}


def _by_sae(tables) -> dict[tuple[str, str], dict]:
    per_sae: dict[tuple[str, str], dict] = {}
    for manifest, table in tables:
        study_cfg = (manifest.get("config") or {}).get("study") or {}
        thr = float(study_cfg.get("f1_threshold", 0.6))
        min_letters = int(study_cfg.get("min_letters", 20))
        for r in table.to_pylist():
            d = per_sae.setdefault((r["sae"], r["hook"]), {"l0": r["l0"], "arch": r["architecture"], "letters": {}})
            d["letters"][r["letter"]] = r
            d["thr"], d["min_letters"] = thr, min_letters
    return per_sae


def _sae_rows(sae: str, hook: str, d: dict) -> list[dict]:
    ok = [r for r in d["letters"].values() if r["probe_f1"] > d["thr"] and r["n_probe_tp"] > 0]
    scored = [r for r in d["letters"].values() if r["n_probe_tp"] > 0]
    rows = []
    for metric, name in (("mean_absorption_fraction", "absorption_fraction"), ("full_absorption_rate", "full_absorption_rate")):
        # "mean": over letters with probe F1 > threshold (the reported number, SAEBench);
        # "mean_any_f1": over every letter with probe true positives (a diagnostic where
        # few letters pass, e.g. a model whose probes do not generalise to held-out words)
        gated = ok if len(ok) >= d["min_letters"] else []
        for stat, group in (("mean", gated), ("mean_ungated", ok), ("mean_any_f1", scored)):
            vals = [r[metric] for r in group if r[metric] is not None and not math.isnan(r[metric])]
            rows.append(_tidy(sae, hook, name, stat, float(d["l0"]), (sum(vals) / len(vals)) if vals else None, len(vals)))
        for L, r in sorted(d["letters"].items()):
            rows.append(_tidy(sae, hook, name, f"letter_{L}", float(r["probe_f1"]), r[metric], int(r["n_probe_tp"])))
    rows.append(_tidy(sae, hook, "letters_f1_ok", "count", float(d["l0"]), float(len(ok)), len(d["letters"])))
    return rows


def summarize_tables(tables, out_dir: Path) -> tuple[list[dict], dict[str, Path]]:
    """Tidy rows (statistics ``mean``, ``mean_ungated``, ``mean_any_f1`` and one per letter) and
    the figures, from the jobs' ``(manifest, table)`` pairs."""
    per_sae = _by_sae(tables)
    rows = [row for (sae, hook), d in sorted(per_sae.items()) for row in _sae_rows(sae, hook, d)]
    figs = _figures(per_sae, out_dir) if per_sae else {}
    return rows, figs


def _short(sae: str) -> str:
    return "/".join(sae.rstrip("/").split("/")[-2:])


METRICS = (("full_absorption_rate", "full-absorption rate"), ("mean_absorption_fraction", "mean absorption fraction"))


def _val(r, metric):
    import numpy as np

    v = None if r is None else r[metric]
    return np.nan if v is None or math.isnan(v) else v


def _figures(per_sae: dict, out_dir: Path) -> dict[str, Path]:
    """absorption_letters.png: per letter and SAE, bars (faded where the letter's probe F1 is
    not above the threshold); absorption_l0.png: the per-SAE means against L0 (solid: letters
    above the F1 threshold; dashed: every letter with probe true positives)."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted(per_sae, key=lambda k: per_sae[k]["l0"])
    return {"absorption_letters": _letters_figure(per_sae, keys, out_dir), "absorption_l0": _l0_figure(per_sae, keys, out_dir)}


def _letters_figure(per_sae: dict, keys: list, out_dir: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    fig, axes = plt.subplots(3, 1, figsize=(12, 8), sharex=True, gridspec_kw={"height_ratios": [3, 3, 1.4]})
    width = 0.8 / max(1, len(keys))
    xs = np.arange(len(LETTERS))
    for ax, (metric, title) in zip(axes, METRICS):
        for i, key in enumerate(keys):
            d = per_sae[key]
            rs = [d["letters"].get(L) for L in LETTERS]
            ok = np.array([r is not None and r["probe_f1"] > d["thr"] for r in rs])
            v = np.array([_val(r, metric) for r in rs], dtype=float)
            x = xs + (i - (len(keys) - 1) / 2) * width
            color = cmap(i % cmap.N)
            ax.bar(x[ok], v[ok], width, color=color, label=f"{_short(key[0])} (L0 {d['l0']:.1f})")
            ax.bar(x[~ok], v[~ok], width, color=color, alpha=0.3)
        ax.set_ylabel(title)
        ax.set_ylim(0, 1)
    thr = per_sae[keys[0]]["thr"]
    # the probes do not depend on the SAE; one bar per letter (the first SAE's run)
    f1 = [_val(per_sae[keys[0]]["letters"].get(L), "probe_f1") for L in LETTERS]
    axes[2].bar(xs, f1, 0.6, color="0.4")
    axes[2].axhline(thr, color="red", lw=0.8, ls="--")
    axes[2].set_ylabel("probe F1 (test)")
    axes[2].set_ylim(0, 1)
    axes[2].set_xticks(xs, LETTERS)
    axes[0].set_title(f"Absorption per letter (faded: probe F1 <= {thr:g})")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    p1 = out_dir / "absorption_letters.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)
    return p1


def _l0_figure(per_sae: dict, keys: list, out_dir: Path) -> Path:
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for (metric, title), color in zip(METRICS, ("C0", "C1")):
        for style, only_ok, what in (("o-", True, "probe F1 > thr"), ("s--", False, "all letters")):
            pts = []
            for key in keys:
                d = per_sae[key]
                vs = [_val(r, metric) for r in d["letters"].values() if (r["probe_f1"] > d["thr"] or not only_ok)]
                vs = [v for v in vs if not np.isnan(v)]
                if vs:
                    pts.append((d["l0"], sum(vs) / len(vs), _short(key[0])))
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    style,
                    color=color,
                    label=f"{title} ({what})",
                    alpha=1.0 if only_ok else 0.6,
                )
                for x, yv, name in pts:
                    ax.annotate(name.split("/")[-1], (x, yv), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("SAE L0 (word positions)")
    ax.set_ylabel("mean over letters")
    ax.set_title("Absorption vs SAE L0")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p2 = out_dir / "absorption_l0.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return p2
