"""``relative`` [GP24]: A_k = (1 - t_k) A + t_k T with t = linspace(0, 1, n_steps).

A unit direction u with a natural length L (e.g. the SAE error) is walked the same way
toward T = A + L u, so the last step is exactly SAE(A) for ``sae_error``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sensdir.config import ScheduleConfig
from sensdir.schedules.base import SCHEDULES, Schedule
from sensdir.walk_types import Proposal, Walk


@dataclass(frozen=True)
class RelativeConfig(ScheduleConfig):
    name: str = "relative"
    n_steps: int = 100


@SCHEDULES.register("relative", RelativeConfig)
class Relative(Schedule):
    accepts = ("target", "scaled_direction")
    grid_kind = "t"

    def walk_from(self, base_BD: torch.Tensor, proposal: Proposal) -> Walk:
        target_BD = proposal.target_BD
        if target_BD is None:
            if proposal.natural_length_B is None:
                raise ValueError(
                    "the relative schedule needs a target or a natural length; use schedule=absolute for unit directions"
                )
            assert proposal.unit_BD is not None  # a Proposal has a target or a unit direction
            target_BD = base_BD + proposal.natural_length_B[:, None] * proposal.unit_BD
        B = base_BD.shape[0]
        t_K = torch.linspace(0, 1, self.n_steps, dtype=base_BD.dtype, device=base_BD.device)
        t_BK1 = t_K[None, :, None]
        acts_BKD = (1 - t_BK1) * base_BD[:, None, :] + t_BK1 * target_BD[:, None, :]
        grid_BK = t_K.expand(B, -1)
        return Walk(acts_BKD, grid_BK, torch.ones_like(grid_BK, dtype=torch.bool))
