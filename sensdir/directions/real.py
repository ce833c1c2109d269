"""``real``: the activation of another real prompt, METHODS §3 [GP24], [HM24].

``T`` is a uniformly drawn row of ``ctx.pool_PD`` (site activations, last position, of
prompts disjoint from the base prompts), drawn with replacement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction, Proposal
from sensdir.directions.sae_recon import as_target, draw_pool_rows, target_norm


@dataclass(frozen=True)
class RealConfig(DirectionConfig):
    name: str = "real"


@DIRECTIONS.register("real", RealConfig)
class Real(Direction):
    returns = "target"

    def propose(
        self,
        base_BD: Float[Tensor, "B d"],
        base_index_B: Int[Tensor, " B"],
        gen: torch.Generator,
    ) -> Proposal:
        pool_PD = self.ctx.pool_PD
        src_B = draw_pool_rows(pool_PD.shape[0], base_BD.shape[0], gen)
        t_BD = as_target(pool_PD[src_B.to(pool_PD.device)], base_BD, self.ctx.device)
        return Proposal(target_BD=t_BD, info={"source_index": src_B, "target_norm": target_norm(t_BD)})
