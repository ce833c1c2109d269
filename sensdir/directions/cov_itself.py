"""``cov_itself``: from the base toward a Gaussian draw, as a unit direction, METHODS §3 [LH24].

``u = (s - A) / ||s - A||`` with ``s ~ N(mu, Sigma + eps I)`` (``SiteStats.sample_gaussian``,
CPU generator): the direction of the ``random`` target, walked along with
``schedule=lengths`` / ``absolute`` instead of toward ``s``. Returns ``"direction"``.

info: ``diff_norm = ||s - A||`` (the distance to ``s``), ``target_norm = ||s||``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.sae_ops import like_base, normalise_rows
from sensdir.walk_types import Proposal


@dataclass(frozen=True)
class CovItselfConfig(DirectionConfig):
    name: str = "cov_itself"


@DIRECTIONS.register("cov_itself", CovItselfConfig)
class CovItself(Direction):
    needs_sae = False
    returns = "direction"
    info_columns = {"diff_norm": "float64", "target_norm": "float64"}

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        s_BD = self.ctx.stats.sample_gaussian(base_BD.shape[0], gen).double()
        u_BD, norm_B = normalise_rows(s_BD - base_BD.to(s_BD.device).double())
        info = {"diff_norm": norm_B.float().cpu(), "target_norm": s_BD.norm(dim=-1).float().cpu()}
        return Proposal(unit_BD=like_base(u_BD, base_BD, self.ctx.device), info=info)
