"""``absolute`` [GP24 "0.5 per step"]: A_k = A + s k (T - A) / ||T - A||, k = 0..n_steps-1.

With a target, steps beyond ||T - A|| / s are dropped (null in the shards). METHODS §2
(choice): the step is exactly ``step_size``, not the reference code's 100/99 * 0.5. With a
unit direction ``u`` the walk is A + s k u and no step is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sensdir.config import ScheduleConfig, bounded
from sensdir.schedules.base import SCHEDULES, Schedule
from sensdir.walk_types import Proposal, Walk


@dataclass(frozen=True)
class AbsoluteConfig(ScheduleConfig):
    name: str = "absolute"
    n_steps: int = 100
    step_size: float = bounded(0.5, gt=0)


@SCHEDULES.register("absolute", AbsoluteConfig)
class Absolute(Schedule):
    cfg: AbsoluteConfig
    accepts = ("target", "direction", "scaled_direction")
    grid_kind = "distance"

    def __init__(self, cfg: AbsoluteConfig):
        super().__init__(cfg)
        if not cfg.step_size > 0:
            raise ValueError(f"schedule.step_size must be positive, got {cfg.step_size}")

    def walk_from(self, base_BD: torch.Tensor, proposal: Proposal) -> Walk:
        B = base_BD.shape[0]
        dist_K = self.cfg.step_size * torch.arange(self.n_steps, dtype=base_BD.dtype, device=base_BD.device)
        dist_BK = dist_K.expand(B, -1)
        if proposal.target_BD is not None:
            delta_BD = proposal.target_BD - base_BD
            total_B = delta_BD.norm(dim=-1)
            unit_BD = delta_BD / total_B.clamp_min(torch.finfo(base_BD.dtype).tiny)[:, None]
            # a small tolerance keeps the step that lands exactly on T despite rounding
            valid_BK = dist_BK <= total_B[:, None] * (1 + 1e-6)
        else:
            unit_BD = proposal.unit_BD
            valid_BK = torch.ones_like(dist_BK, dtype=torch.bool)
        acts_BKD = base_BD[:, None, :] + dist_BK[:, :, None] * unit_BD[:, None, :]
        return Walk(acts_BKD, dist_BK, valid_BK)
