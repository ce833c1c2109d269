"""``relative`` [GP24]: A_k = (1 - t_k) A + t_k T with t = linspace(0, 1, n_steps)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sensdir.config import ScheduleConfig
from sensdir.directions.base import Proposal
from sensdir.schedules.base import SCHEDULES, Schedule, Walk


@dataclass(frozen=True)
class RelativeConfig(ScheduleConfig):
    name: str = "relative"
    n_steps: int = 100


@SCHEDULES.register("relative", RelativeConfig)
class Relative(Schedule):
    accepts = ("target",)
    grid_kind = "t"

    def walk(self, base_BD: torch.Tensor, proposal: Proposal) -> Walk:
        if proposal.target_BD is None:
            raise ValueError("the relative schedule needs a target; use schedule=absolute for unit directions")
        B = base_BD.shape[0]
        t_K = torch.linspace(0, 1, self.n_steps, dtype=base_BD.dtype, device=base_BD.device)
        t_BK1 = t_K[None, :, None]
        acts_BKD = (1 - t_BK1) * base_BD[:, None, :] + t_BK1 * proposal.target_BD[:, None, :]
        grid_BK = t_K.expand(B, -1)
        return Walk(acts_BKD, grid_BK, torch.ones_like(grid_BK, dtype=torch.bool))
