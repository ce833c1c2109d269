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
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.sae_ops import draw_from_pool, like_base, target_norm
from sensdir.walk_types import Proposal


@dataclass(frozen=True)
class RealConfig(DirectionConfig):
    name: str = "real"


@DIRECTIONS.register("real", RealConfig)
class Real(Direction):
    needs_sae = False
    returns = "target"
    info_columns = {"source_index": "int64", "target_norm": "float64"}

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        src_B, b_BD = draw_from_pool(self.ctx.pool_PD, base_BD.shape[0], gen)
        t_BD = like_base(b_BD, base_BD, self.ctx.device)
        return Proposal(target_BD=t_BD, info={"source_index": src_B, "target_norm": target_norm(t_BD)})
