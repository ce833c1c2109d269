"""The papers' computation, which tests and the benchmark hold the engine to: a hook
overwrites the site and the whole sequence runs through the whole model."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.engine.forward import blocks_from_site, unembed
from sensdir.site import Site, final_hook


@torch.inference_mode()
def run_from_site(model, resid_NTD: Float[Tensor, "N T d"], site: Site) -> tuple[Float[Tensor, "N V"], Float[Tensor, "N d"]]:
    """Logits and final residual at the last position, running blocks from the site on."""
    final_ND = blocks_from_site(model, resid_NTD, site)[:, -1, :]
    return unembed(model, final_ND), final_ND


@torch.inference_mode()
def naive_readouts(
    model, tokens_T: Int[Tensor, " T"], acts_KD: Float[Tensor, "K d"], site: Site
) -> tuple[Float[Tensor, "K V"], Float[Tensor, "K d"]]:
    """Overwrite the site's last position with a hook, run the full model."""
    K = acts_KD.shape[0]
    tokens_KT = tokens_T[None, :].expand(K, -1)

    def overwrite(resid_KTD, hook):
        resid_KTD = resid_KTD.clone()
        resid_KTD[:, -1, :] = acts_KD.to(resid_KTD.dtype)
        return resid_KTD

    store: dict[str, Tensor] = {}

    def grab(resid, hook):
        store["final"] = resid[:, -1, :]

    logits_KTV = model.run_with_hooks(tokens_KT, fwd_hooks=[(site.hook, overwrite), (final_hook(model.cfg.n_layers), grab)])
    return logits_KTV[:, -1, :], store["final"]
