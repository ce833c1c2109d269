"""``random``: a Gaussian draw matching the data's first two moments, METHODS §3 [GP24], [HM24].

``T ~ N(mu, Sigma + eps I)`` with ``mu``, ``Sigma`` from the stats prompts (``SiteStats``),
sampled by ``SiteStats.sample_gaussian`` from the CPU generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.sae_ops import like_base, target_norm
from sensdir.walk_types import Proposal


@dataclass(frozen=True)
class RandomConfig(DirectionConfig):
    name: str = "random"


@DIRECTIONS.register("random", RandomConfig)
class Random(Direction):
    needs_sae = False
    returns = "target"
    info_columns = {"target_norm": "float64"}

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        t_BD = like_base(self.ctx.stats.sample_gaussian(base_BD.shape[0], gen), base_BD, self.ctx.device)
        return Proposal(target_BD=t_BD, info={"target_norm": target_norm(t_BD)})
