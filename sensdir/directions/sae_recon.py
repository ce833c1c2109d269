"""``sae_recon``: the SAE reconstruction of another real activation, METHODS §3 [GP24].

``T = SAE(B) = decode(encode(B))`` for ``B`` a uniformly drawn row of the pool (activations of
other real prompts, disjoint from the base prompts). The decoder bias is included, as in
``sae.decode``. The SAE's error term is never added (``sae.forward`` would add it when
``use_error_term`` is on), so this is always the plain reconstruction.

The module also holds the small SAE helpers that the synthetic types share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction, Proposal

if TYPE_CHECKING:
    from sae_lens import SAE


# --------------------------------------------------------------------------- SAE helpers


def sae_encode(sae: "SAE", x_BD: Float[Tensor, "B d"]) -> Float[Tensor, "B d_sae"]:
    """Latent codes ``f = sae.encode(x)``, computed on the SAE's device and dtype."""
    w = sae.W_dec
    with torch.no_grad():
        return sae.encode(x_BD.to(device=w.device, dtype=w.dtype))


def sae_decode(sae: "SAE", f_BS: Float[Tensor, "B d_sae"]) -> Float[Tensor, "B d"]:
    """``sae.decode(f)`` (decoder bias included), on the SAE's device and dtype."""
    w = sae.W_dec
    with torch.no_grad():
        return sae.decode(f_BS.to(device=w.device, dtype=w.dtype))


def draw_pool_rows(n_pool: int, n: int, gen: torch.Generator) -> Int[Tensor, " n"]:
    """``n`` pool row indices, uniform with replacement, from the CPU generator ``gen``.

    The pool is built from prompts disjoint from the base prompts, so any row is "another"
    prompt; ``base_index_B`` is not needed to avoid the base itself.
    """
    if n_pool == 0:
        raise ValueError("the activation pool is empty: real/sae_recon targets need n_pool > 0")
    return torch.randint(n_pool, (n,), generator=gen)


def l0(f_BS: Float[Tensor, "B d_sae"]) -> Int[Tensor, " B"]:
    """Number of nonzero latents per row (on the CPU)."""
    return (f_BS != 0).sum(dim=-1).cpu()


def as_target(
    t_BD: Float[Tensor, "B d"], like_BD: Float[Tensor, "B d"], device: torch.device
) -> Float[Tensor, "B d"]:
    """Targets in the base activations' dtype, on the job's device."""
    return t_BD.to(device=device, dtype=like_BD.dtype)


def target_norm(t_BD: Float[Tensor, "B d"]) -> Float[Tensor, " B"]:
    return t_BD.detach().float().norm(dim=-1).cpu()


# --------------------------------------------------------------------------- the type


@dataclass(frozen=True)
class SaeReconConfig(DirectionConfig):
    name: str = "sae_recon"


@DIRECTIONS.register("sae_recon", SaeReconConfig)
class SaeRecon(Direction):
    returns = "target"

    def propose(
        self,
        base_BD: Float[Tensor, "B d"],
        base_index_B: Int[Tensor, " B"],
        gen: torch.Generator,
    ) -> Proposal:
        pool_PD = self.ctx.pool_PD
        src_B = draw_pool_rows(pool_PD.shape[0], base_BD.shape[0], gen)
        b_BD = pool_PD[src_B.to(pool_PD.device)]
        f_BS = sae_encode(self.ctx.sae, b_BD)
        t_BD = as_target(sae_decode(self.ctx.sae, f_BS), base_BD, self.ctx.device)
        info = {"source_index": src_B, "target_norm": target_norm(t_BD), "target_l0": l0(f_BS)}
        return Proposal(target_BD=t_BD, info=info)
