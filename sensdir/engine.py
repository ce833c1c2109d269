"""Readouts of perturbed activations: run the model from the site's layer on.

For the last-position site every row shares the clean prefix, so a row is the clean
residual stream at the site with its last position replaced; only blocks from the site's
layer on are run, and only the perturbed position is unembedded (the vocabulary-sized
logits are the largest tensor of the whole computation).

``naive_readouts`` is the papers' computation (a hook overwrites the site, the whole
sequence runs through the whole model); tests prove the two agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.metrics import kl_from_logits

_SITE_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


class SiteError(ValueError):
    pass


@dataclass(frozen=True)
class Site:
    hook: str
    layer: int
    start_layer: int  # first block that reads the (perturbed) residual stream

    @classmethod
    def parse(cls, hook: str, n_layers: int) -> "Site":
        m = _SITE_RE.match(hook)
        if m is None:
            raise SiteError(
                f"site hook {hook!r} is not a residual-stream hook; use blocks.<layer>.hook_resid_pre "
                f"or blocks.<layer>.hook_resid_post with layer in 0..{n_layers - 1}"
            )
        layer = int(m.group(1))
        if not 0 <= layer < n_layers:
            raise SiteError(f"site hook {hook!r}: layer {layer} is outside the model's layers 0..{n_layers - 1}")
        return cls(hook, layer, layer if m.group(2) == "pre" else layer + 1)


def final_hook(n_layers: int) -> str:
    return f"blocks.{n_layers - 1}.hook_resid_post"


@torch.inference_mode()
def clean_site_resid(model, tokens_BT: Int[Tensor, "B T"], site: Site) -> Float[Tensor, "B T d"]:
    """The clean residual stream at the site, every position."""
    _, cache = model.run_with_cache(tokens_BT, names_filter=site.hook, stop_at_layer=site.layer + 1)
    return cache[site.hook]


@torch.inference_mode()
def run_from_site(
    model, resid_NTD: Float[Tensor, "N T d"], site: Site
) -> tuple[Float[Tensor, "N V"], Float[Tensor, "N d"]]:
    """Logits and final residual at the last position, running blocks from the site on."""
    resid = resid_NTD
    for block in model.blocks[site.start_layer :]:
        resid = block(resid)
    final_ND = resid[:, -1, :]
    logits_NV = model.unembed(model.ln_final(final_ND[:, None, :]))[:, 0, :]
    return logits_NV, final_ND


@torch.inference_mode()
def naive_readouts(
    model, tokens_T: Int[Tensor, " T"], acts_KD: Float[Tensor, "K d"], site: Site
) -> tuple[Float[Tensor, "K V"], Float[Tensor, "K d"]]:
    """Reference: overwrite the site's last position with a hook, run the full model."""
    K = acts_KD.shape[0]
    tokens_KT = tokens_T[None, :].expand(K, -1)

    def overwrite(resid_KTD, hook):
        resid_KTD = resid_KTD.clone()
        resid_KTD[:, -1, :] = acts_KD.to(resid_KTD.dtype)
        return resid_KTD

    fhook = final_hook(model.cfg.n_layers)
    store: dict[str, Tensor] = {}

    def grab(resid, hook):
        store["final"] = resid[:, -1, :]

    logits_KTV = model.run_with_hooks(tokens_KT, fwd_hooks=[(site.hook, overwrite), (fhook, grab)])
    return logits_KTV[:, -1, :], store["final"]


@dataclass
class StepMetrics:
    kl_BK: Float[Tensor, "B K"]
    l2_BK: Float[Tensor, "B K"]


def _row_chunks(B: int, K: int, budget: int) -> Iterator[slice]:
    rows = max(1, budget // K)
    for start in range(0, B, rows):
        yield slice(start, min(B, start + rows))


@torch.inference_mode()
def walk_metrics(
    model,
    clean_BTD: Float[Tensor, "B T d"],
    acts_BKD: Float[Tensor, "B K d"],
    site: Site,
    batch_size: int = 4096,
    progress=None,
) -> StepMetrics:
    """KL and L2 at every step of every walk, relative to that walk's step 0.

    Whole walks go into one forward pass (``batch_size`` bounds rows x steps), so step 0's
    readout comes from the same batch as the others and KL/L2 start at exactly 0.
    """
    B, K, D = acts_BKD.shape
    T = clean_BTD.shape[1]
    kl_BK = torch.empty(B, K, dtype=torch.float32, device=acts_BKD.device)
    l2_BK = torch.empty(B, K, dtype=torch.float32, device=acts_BKD.device)
    for rows in _row_chunks(B, K, batch_size):
        n = rows.stop - rows.start
        resid_nKTD = clean_BTD[rows, None, :, :].expand(n, K, T, D).clone()
        resid_nKTD[:, :, -1, :] = acts_BKD[rows].to(resid_nKTD.dtype)
        logits_NV, final_ND = run_from_site(model, resid_nKTD.reshape(n * K, T, D), site)
        logits_nKV = logits_NV.reshape(n, K, -1)
        final_nKD = final_ND.reshape(n, K, D)
        clean_logits = logits_nKV[:, :1, :].expand_as(logits_nKV).reshape(n * K, -1)
        kl_BK[rows] = kl_from_logits(clean_logits, logits_NV).reshape(n, K)
        l2_BK[rows] = (final_nKD.float() - final_nKD[:, :1, :].float()).norm(dim=-1)
        if progress is not None:
            progress.update(n)
    return StepMetrics(kl_BK, l2_BK)
