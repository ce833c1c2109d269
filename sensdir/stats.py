"""Data statistics at the site (METHODS §1)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import StatsConfig
from sensdir.engine import clean_site_resid
from sensdir.site import Site
from sensdir.walk_types import SiteStats


@torch.inference_mode()
def site_activations(model, tokens_NT: Int[Tensor, "N T"], site: Site, batch: int = 256) -> Float[Tensor, "N T d"]:
    parts = [
        clean_site_resid(model, tokens_NT[i : i + batch].to(model.cfg.device), site) for i in range(0, len(tokens_NT), batch)
    ]
    return torch.cat(parts).float()


@torch.inference_mode()
def compute_stats(acts_NTD: Float[Tensor, "N T d"], sae, cfg: StatsConfig, skip_first: bool) -> SiteStats:
    """mu, Sigma (+ eps I) and the median norm from the last positions; firing frequencies
    from every position (but a BOS one).

    (choice) Firing frequencies use all positions: with last positions alone, 1000 prompts
    give 1000 samples and many rare latents would look dead.
    """
    last_ND = acts_NTD[:, -1, :].double()
    mu_D = last_ND.mean(0)
    centred = last_ND - mu_D
    cov_DD = centred.T @ centred / max(1, last_ND.shape[0] - 1)
    cov_DD = cov_DD + cfg.cov_eps * torch.eye(cov_DD.shape[0], dtype=cov_DD.dtype, device=cov_DD.device)
    chol_DD = torch.linalg.cholesky(cov_DD)
    all_MD = (acts_NTD[:, 1:] if skip_first else acts_NTD).reshape(-1, acts_NTD.shape[-1])
    fires = torch.zeros(sae.cfg.d_sae if sae is not None else 0, device=acts_NTD.device)
    for i in range(0, all_MD.shape[0] if sae is not None else 0, 4096):
        fires += (sae.encode(all_MD[i : i + 4096].to(sae.W_dec.dtype)) > 0).float().sum(0)
    dt = acts_NTD.dtype
    return SiteStats(
        mu_D=mu_D.to(dt),
        cov_DD=cov_DD.to(dt),
        chol_DD=chol_DD.to(dt),
        median_norm=float(last_ND.norm(dim=-1).median()),
        firing_freq_S=fires / all_MD.shape[0],
        firing_count_S=fires.round().long(),
    )
