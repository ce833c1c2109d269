"""``real_itself``: from the base toward another real activation, as a unit direction,
METHODS §3 [LH24].

``u = (B - A) / ||B - A||`` with ``B`` a uniformly drawn row of the activation pool (other
real prompts, disjoint from the base prompts; drawn with replacement, CPU generator): the
direction of the ``real`` target, walked along with ``schedule=lengths`` / ``absolute``.
Returns ``"direction"``.

info: ``source_index`` (the pool row), ``diff_norm = ||B - A||``. A pool row equal to the
base (the same prompt in both) gives ``u = 0``, marked by ``diff_norm = 0``. Building it
with an empty pool is a ``ConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.sae_ops import check_pool, draw_from_pool, like_base, normalise_rows
from sensdir.walk_types import DirectionContext, Proposal


@dataclass(frozen=True)
class RealItselfConfig(DirectionConfig):
    name: str = "real_itself"


@DIRECTIONS.register("real_itself", RealItselfConfig)
class RealItself(Direction):
    needs_sae = False
    returns = "direction"
    info_columns = {"source_index": "int64", "diff_norm": "float64"}

    def __init__(self, cfg: RealItselfConfig, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        check_pool("real_itself", ctx.pool_PD, 1)

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        src_B, b_BD = draw_from_pool(self.ctx.pool_PD, base_BD.shape[0], gen)
        b_BD = b_BD.double()
        u_BD, norm_B = normalise_rows(b_BD - base_BD.to(b_BD.device).double())
        info = {"source_index": src_B, "diff_norm": norm_B.float().cpu()}
        return Proposal(unit_BD=like_base(u_BD, base_BD, self.ctx.device), info=info)
