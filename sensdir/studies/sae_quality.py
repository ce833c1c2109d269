"""``sae_quality``: how well the SAE reconstructs the site, on held-out prompts.

One row per SAE: L0, fraction of variance unexplained, CE-loss recovered when SAE(x)
replaces x at every position, the relative reconstruction bias gamma = E[x_hat . x] /
E[||x||^2] (METHODS §8, [R24]: gamma < 1 is shrinkage), and the dead-latent fraction.
Sweep it over SAEs (``-m sae.sae_id=...``) for the table the reduce report shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from sensdir.config import DataConfig, bounded
from sensdir.data import load_prompts
from sensdir.sae_metrics import ReconstructionStats, ce_loss_recovered, dead_fraction
from sensdir.studies.base import STUDIES, Study, StudyConfig


@dataclass(frozen=True)
class SaeQualityConfig(StudyConfig):
    name: str = "sae_quality"
    n_prompts: int = bounded(200, ge=1)
    n_ctx: int = bounded(32, ge=2)
    batch: int = bounded(32, ge=1)


def prompt_data(data: DataConfig, cfg: SaeQualityConfig) -> DataConfig:
    """The data the study reads: ``cfg.n_prompts`` prompts of ``cfg.n_ctx`` tokens from ``data``."""
    return replace(data, n_ctx=cfg.n_ctx, n_prompts=cfg.n_prompts, n_stats=1, n_pool=1)


@STUDIES.register("sae_quality", SaeQualityConfig)
class SaeQuality(Study):
    cfg: SaeQualityConfig
    summary_section = "sae_quality"

    def __init__(self, cfg: SaeQualityConfig, ctx):
        super().__init__(cfg, ctx)
        if cfg.n_prompts < 1 or cfg.n_ctx < 2:
            raise ValueError("study.n_prompts must be positive and study.n_ctx at least 2")

    def planned_keys(self) -> list[str]:
        return ["sae"]

    @torch.inference_mode()
    def run(self) -> dict[str, list]:
        ctx, cfg = self.ctx, self.cfg
        tokens = load_prompts(prompt_data(ctx.cfg.data, cfg), ctx.model.tokenizer, ctx.seed).base_BT
        hook, sae = ctx.site.hook, ctx.sae
        acc = ReconstructionStats(sae.cfg.d_sae)
        ce = {"clean": 0.0, "recon": 0.0, "zero": 0.0}
        for i in range(0, len(tokens), cfg.batch):
            toks = tokens[i : i + cfg.batch].to(ctx.device)

            def splice(x, hook, kind):
                if kind == "zero":
                    return torch.zeros_like(x)
                f = sae.encode(x.to(sae.W_dec.dtype))
                x_hat = sae.decode(f)
                acc.update(x, x_hat, f)
                return x_hat.to(x.dtype)

            n = len(toks)
            ce["clean"] += float(ctx.model(toks, return_type="loss")) * n
            for kind in ("recon", "zero"):
                loss = ctx.model.run_with_hooks(
                    toks, return_type="loss", fwd_hooks=[(hook, lambda x, hook, k=kind: splice(x, hook, k))]
                )
                ce[kind] += float(loss) * n
        ce = {k: v / len(tokens) for k, v in ce.items()}
        sae_cfg = ctx.cfg.sae
        return {
            "row_key": ["sae"],
            "sae": [sae_cfg.path or f"{sae_cfg.release}/{sae_cfg.sae_id}"],
            "architecture": [sae.cfg.architecture()],
            "hook": [hook],
            "d_sae": [sae.cfg.d_sae],
            "l0": [acc.l0()],
            "fvu": [acc.fvu()],
            "gamma": [acc.gamma()],
            "ce_clean": [ce["clean"]],
            "ce_recon": [ce["recon"]],
            "ce_zero": [ce["zero"]],
            "ce_loss_recovered": [ce_loss_recovered(ce["clean"], ce["recon"], ce["zero"])],
            "dead_fraction": [dead_fraction(acc.firing_frequency())],
            "n_tokens": [acc.n],
        }

    @classmethod
    def summarize(cls, tables, out_dir):
        rows, saes = [], []
        for _manifest, table in tables:
            for r in table.to_pylist():
                saes.append(r)
                for stat in ("l0", "fvu", "gamma", "ce_loss_recovered", "dead_fraction"):
                    rows.append(
                        {
                            "section": "sae_quality",
                            "direction": None,
                            "schedule": None,
                            "sae": r["sae"],
                            "hook": r["hook"],
                            "metric": r["architecture"],
                            "statistic": stat,
                            "x": None,
                            "value": float(r[stat]),
                            "n": int(r["n_tokens"]),
                        }
                    )
        return rows, {"sae_quality": _quality_figure(saes, out_dir / "sae_quality.png")} if saes else {}


def _quality_figure(saes: list[dict], path):
    """Fidelity and shrinkage against sparsity, one point per SAE (the [R24] comparison)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in zip(axes, ("fvu", "ce_loss_recovered", "gamma"), ("FVU", "CE-loss recovered", "gamma (shrinkage < 1)")):
        for arch in sorted({r["architecture"] for r in saes}):
            pts = sorted((r["l0"], r[key], r["sae"].rsplit("/", 1)[-1]) for r in saes if r["architecture"] == arch)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=arch)
            for x, y, name in pts:
                ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("L0")
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
