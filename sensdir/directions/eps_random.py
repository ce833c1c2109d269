"""``eps_random``: a random direction walked to the SAE error's length, METHODS §3 [G24].

``u = g / ||g||`` with ``g ~ N(0, I)`` (float64, CPU generator): uniform on the sphere,
independent of ``A`` and of the data statistics. Returns ``"scaled_direction"`` with
``natural_length_B = ||SAE(A) - A||`` (reconstruction as in ``sae_error``), so a relative walk
ends at distance exactly ``||SAE(A) - A||`` from ``A``: the control that [G24] compares the
SAE error's KL with.

info: ``error_norm = ||SAE(A) - A||``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.sae_ops import normalise_rows, sae_error, scaled_direction
from sensdir.walk_types import Proposal


@dataclass(frozen=True)
class EpsRandomConfig(DirectionConfig):
    name: str = "eps_random"


@DIRECTIONS.register("eps_random", EpsRandomConfig)
class EpsRandom(Direction):
    returns = "scaled_direction"
    comparison_role = "error_baseline"
    info_columns = {"error_norm": "float64"}

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        g_BD = torch.randn(base_BD.shape, generator=gen, dtype=torch.float64)  # CPU: reproducible
        u_BD, _ = normalise_rows(g_BD)
        e_BD, _ = sae_error(self.ctx.sae, base_BD)
        norm_B = e_BD.norm(dim=-1)
        return scaled_direction(u_BD, norm_B, base_BD, self.ctx.device, {"error_norm": norm_B.float().cpu()})
