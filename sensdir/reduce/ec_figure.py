"""``error_correction.png``: length to a KL level against the mixing angle, per source, beside
the L^p model's curves for p = 2 and the fitted p (METHODS §11 [FH26])."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def error_correction_figure(rows: list[dict], path: Path) -> Path | None:
    """One panel per group (source, schedule, SAE, hook): per KL level, the geometric mean of
    ``L(theta) / L_pure`` (dots), the p = 2 model (dotted) and the fitted-p model (solid)."""
    curves = [r for r in rows if r["section"] == "error_correction_curves" and r["value"] is not None]
    if not curves:
        return None
    p_fit = {
        (r["direction"], r["schedule"], r["sae"], r["hook"], r["x"]): r["value"]
        for r in rows
        if r["section"] == "error_correction" and r["metric"] == "p_fit" and r["statistic"] == "estimate"
    }
    keys = sorted({(r["direction"], r["schedule"], r["sae"], r["hook"]) for r in curves})
    ncol = min(3, len(keys))
    nrow = -(-len(keys) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.9 * nrow), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        mine = [r for r in curves if (r["direction"], r["schedule"], r["sae"], r["hook"]) == key]
        metrics = sorted({r["metric"] for r in mine}, key=lambda m: float(m.split("=")[1]))
        cmap = plt.get_cmap("viridis", max(len(metrics), 2))
        for i, metric in enumerate(metrics):
            level = float(metric.split("=")[1])
            color = cmap(i)
            for stat, style in (("observed", "o"), ("model_p2", ":"), ("model_pfit", "-")):
                pts = sorted((r["x"], r["value"]) for r in mine if r["metric"] == metric and r["statistic"] == stat)
                if not pts:
                    continue
                x, y = np.array(pts).T
                p = p_fit.get((*key, level))
                label = {
                    "observed": f"KL {level:g}",
                    "model_p2": None,
                    "model_pfit": f"fit p = {p:.2f}" if p is not None else None,
                }[stat]
                ax.plot(x, y, style, color=color, ms=4, lw=1.2, label=label)
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_xticks([0, 15, 30, 45, 60, 75, 90])
        ax.set_xlabel("angle between d1 and d2 (degrees)")
        ax.set_ylabel("length to KL level / L_pure")
        ax.set_title(" | ".join(k for k in key if k and k != "sae's"), fontsize=9)
        ax.legend(fontsize=7, title="dots: data; dotted: p = 2", title_fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle("Feature-specific error correction [FH26]: L^p model, p > 2 = mixtures need longer walks", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
