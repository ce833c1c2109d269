"""Pieces of the model's forward pass that every engine path shares: the clean site
activations, blocks from the site on, the final norm and the unembedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.site import Site


@torch.inference_mode()
def clean_site_resid(model, tokens_BT: Int[Tensor, "B T"], site: Site) -> Float[Tensor, "B T d"]:
    """The clean residual stream at the site, every position."""
    _, cache = model.run_with_cache(tokens_BT, names_filter=site.hook, stop_at_layer=site.layer + 1)
    return cache[site.hook]


def blocks_from_site(model, resid_NTD: Float[Tensor, "N T d"], site: Site) -> Float[Tensor, "N T d"]:
    """The residual stream after the last block, running only the blocks from the site on."""
    for block in model.blocks[site.start_layer :]:
        resid_NTD = block(resid_NTD)
    return resid_NTD


def norm(kind: str | None, module, x: Tensor, eps: float) -> Tensor:
    """A transformer_lens normalisation (``LN``, ``LNPre``, ``RMS``, ``RMSPre`` or none) as one
    fused kernel where it is a LayerNorm (the module takes several elementwise passes)."""
    if kind is None:
        return x
    if kind in ("LN", "LNPre"):
        w = module.w if kind == "LN" else None
        b = module.b if kind == "LN" else None
        return F.layer_norm(x, x.shape[-1:], w, b, eps)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * module.w if kind == "RMS" else x


def unembed(model, resid_ND: Float[Tensor, "N d"], out: Tensor | None = None) -> Float[Tensor, "N V"]:
    """Logits of final residuals, into ``out`` if given. (transformer_lens's Unembed copies
    the transposed W_U on every call, which costs as much as the product itself for a few
    hundred rows; GPT-2's b_U is all zeros, and skipping it saves a pass over the logits.)"""
    cfg = model.cfg
    h_ND = norm(cfg.normalization_type, getattr(model, "ln_final", None), resid_ND, cfg.eps)
    W_U, b_U = model.unembed.W_U, model.unembed.b_U
    if not b_U.any():
        return torch.mm(h_ND, W_U, out=out)
    return torch.addmm(b_U, h_ND, W_U, out=out)


def logit_rows(model, logits_mb: float) -> int:
    """Rows of vocabulary-sized logits (and their log-softmax copies) that fit the budget."""
    per_row = model.cfg.d_vocab * 4 * 2  # logits (and a float32 copy of low-precision ones)
    return max(1, int(logits_mb * 2**20 // per_row))
