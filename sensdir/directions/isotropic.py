"""``isotropic``: the naive random target, METHODS §3 [HM24], [LH24].

``T = ||A||_median * g / ||g||`` with ``g ~ N(0, I)``: a uniformly random direction scaled to
the median activation norm of the stats prompts (``SiteStats.median_norm``). It ignores the
mean and covariance of the data, unlike ``random``.
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
class IsotropicConfig(DirectionConfig):
    name: str = "isotropic"


@DIRECTIONS.register("isotropic", IsotropicConfig)
class Isotropic(Direction):
    needs_sae = False
    returns = "target"
    info_columns = {"target_norm": "float64"}

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        g_BD = torch.randn(base_BD.shape, generator=gen, dtype=torch.float64)  # CPU: reproducible
        t_BD = self.ctx.stats.median_norm * g_BD / g_BD.norm(dim=-1, keepdim=True)
        t_BD = like_base(t_BD, base_BD, self.ctx.device)
        return Proposal(target_BD=t_BD, info={"target_norm": target_norm(t_BD)})
