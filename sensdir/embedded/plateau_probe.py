"""A fast plateau probe for models in training (docs/methods.md §10), torch only.

The model search (:mod:`sensdir.embedded.search`) measures dozens of checkpoints; loading each
into transformer_lens and running two sensdir jobs would cost more than training them. This probe
computes the same two diagnostics directly on a :class:`~sensdir.embedded.gpt.GPT`:

* plateau index at t: median over base prompts of KL_real(t) / KL_random(t), both walks from the
  same base prompt's last-position residual at ``blocks.<layer>.hook_resid_pre``, relative
  schedule x(t) = base + t (target - base); ``real`` targets are the activations of disjoint
  pool prompts, ``random`` targets samples of N(mu, Sigma + eps I) fitted on disjoint stats prompts;
* L2 curvature: median of l2(0.2) / (2 l2(0.1)) toward real targets, l2 being the distance of
  the final residual (before the last LayerNorm) at the perturbed position.

The prompts are built as the ``embedded`` data source builds them (first ``n_ctx`` tokens of the
held-out paragraphs, seeded order), and ``tests/test_plateau_probe.py`` checks the probe against
the reduce's own diagnostics on the same model, so numbers from the search and from
``experiment=plateau_check`` are the same quantity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.metrics.kl import kl_from_logits

from .gpt import GPT

T_GRID = (0.1, 0.2, 0.3)


@dataclass(frozen=True)
class ProbePrompts:
    stats_NT: Int[Tensor, "n_stats T"]
    pool_PT: Int[Tensor, "n_pool T"]
    base_BT: Int[Tensor, "n_base T"]


@torch.no_grad()
def resid_pre(model: GPT, tokens_NT: Tensor, layer: int) -> Float[Tensor, "N T d"]:
    T = tokens_NT.shape[-1]
    x = model.embed.W_E[tokens_NT] + model.pos_embed.W_pos[:T]
    for block in model.blocks[:layer]:
        x = block(x)
    return x


@torch.no_grad()
def finish(model: GPT, x_NTD: Tensor, layer: int) -> tuple[Float[Tensor, "N d"], Float[Tensor, "N V"]]:
    """Final residual and logits at the last position, from the residual before block ``layer``."""
    for block in model.blocks[layer:]:
        x_NTD = block(x_NTD)
    final_ND = x_NTD[:, -1]
    logits_NV = model.ln_final(final_ND) @ model.unembed.W_U + model.unembed.b_U
    return final_ND, logits_NV


@torch.no_grad()
def walk(model: GPT, prefix_BTD: Tensor, target_BD: Tensor, layer: int, ts: tuple[float, ...]) -> dict[float, tuple]:
    """KL and l2 at each t for walks of the last position from its value toward ``target_BD``."""
    clean_final, clean_logits = finish(model, prefix_BTD.clone(), layer)
    base_BD = prefix_BTD[:, -1]
    out = {}
    for t in ts:
        x = prefix_BTD.clone()
        x[:, -1] = base_BD + t * (target_BD - base_BD)
        final, logits = finish(model, x, layer)
        out[t] = (kl_from_logits(clean_logits, logits), (final - clean_final).double().norm(dim=-1))
    return out


@torch.no_grad()
def plateau_probe(model: GPT, prompts: ProbePrompts, layer: int, seed: int = 0, cov_eps: float = 0.01) -> dict:
    """Plateau index at ``T_GRID`` and L2 curvature (see the module docstring)."""
    model.eval()
    stats_ND = resid_pre(model, prompts.stats_NT, layer)[:, -1].double()
    mu_D = stats_ND.mean(0)
    cov_DD = torch.cov(stats_ND.T) + cov_eps * torch.eye(stats_ND.shape[1], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    prefix_BTD = resid_pre(model, prompts.base_BT, layer)
    B, D = prefix_BTD.shape[0], prefix_BTD.shape[-1]
    z_BD = torch.randn(B, D, generator=gen, dtype=torch.float64)
    random_BD = (mu_D + z_BD @ torch.linalg.cholesky(cov_DD).T).to(prefix_BTD.dtype)
    pick = torch.randint(0, prompts.pool_PT.shape[0], (B,), generator=gen)
    real_BD = resid_pre(model, prompts.pool_PT[pick], layer)[:, -1]
    real = walk(model, prefix_BTD, real_BD, layer, T_GRID)
    rand = walk(model, prefix_BTD, random_BD, layer, T_GRID)
    out: dict = {}
    for t in T_GRID:
        ratio = real[t][0] / rand[t][0].clamp_min(1e-30)
        out[f"plateau_index_t{t:g}"] = float(ratio.median())
        out[f"kl_real_t{t:g}"] = float(real[t][0].median())
        out[f"kl_random_t{t:g}"] = float(rand[t][0].median())
    # Sigma + eps I: where the residual's own variance is far below eps (e.g. at initialisation)
    # the random targets lie much farther away than the real ones and the index means nothing
    out["random_to_real_distance"] = float(
        ((random_BD - prefix_BTD[:, -1]).norm(dim=-1) / (real_BD - prefix_BTD[:, -1]).norm(dim=-1)).median()
    )
    out["l2_curvature"] = float((real[0.2][1] / (2 * real[0.1][1]).clamp_min(1e-30)).median())
    out["median_final_norm"] = float(finish(model, prefix_BTD.clone(), layer)[0].norm(dim=-1).median())
    return out


def embedded_prompts(tokenizer, n_ctx: int = 10, n_stats: int = 600, n_pool: int = 300, n_base: int = 200, seed: int = 0):
    """Prompt sets drawn exactly as the ``embedded`` data source draws them."""
    from sensdir.config import DataConfig
    from sensdir.data import load_prompts

    cfg = DataConfig(n_ctx=n_ctx, n_stats=n_stats, n_pool=n_pool, n_prompts=n_base)
    sets = load_prompts(cfg, tokenizer, seed)
    return ProbePrompts(stats_NT=sets.stats_NT, pool_PT=sets.pool_PT, base_BT=sets.base_BT)


def load_gpt(path) -> GPT:
    """A model directory (``config.json`` + ``model.safetensors``, as train.py and the search
    write them) as a float32 :class:`GPT`."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from .gpt import GPTConfig

    kw = json.loads((Path(path) / "config.json").read_text())
    model = GPT(GPTConfig(**{k: kw[k] for k in GPTConfig.__dataclass_fields__ if k in kw}))
    model.load_state_dict({k: v.float() for k, v in load_file(str(Path(path) / "model.safetensors")).items()})
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """``python -m sensdir.embedded.plateau_probe [MODEL_DIR] [--layer N]``: the probe on a model
    directory in the embedded layout (default: the shipped model), printed as JSON."""
    import argparse
    import json
    from pathlib import Path

    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description="plateau index and L2 curvature of a model directory (docs/methods.md §10)")
    ap.add_argument("model_dir", nargs="?", type=Path, default=Path(__file__).parent / "assets" / "model")
    ap.add_argument("--layer", type=int, default=1, help="walk the residual before this block (default 1)")
    ap.add_argument("--prompts", type=int, default=700, help="base prompts (at most ~730 on the embedded data)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    prompts = embedded_prompts(AutoTokenizer.from_pretrained(str(args.model_dir / "tokenizer")), n_base=args.prompts)
    result = plateau_probe(load_gpt(args.model_dir), prompts, args.layer, seed=args.seed)
    print(json.dumps({"model_dir": str(args.model_dir), "site": f"blocks.{args.layer}.hook_resid_pre", **result}, indent=2))


if __name__ == "__main__":
    main()
