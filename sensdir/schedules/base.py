"""A schedule turns (base activation, proposal) into the activations of every step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from jaxtyping import Float
from torch import Tensor

from sensdir.config import ScheduleConfig
from sensdir.registry import Registry
from sensdir.walk_types import Proposal, Walk

SCHEDULES: Registry[type[Schedule]] = Registry("schedule", "sensdir.schedules")


class Schedule(ABC):
    #: which proposals the schedule can walk (``Direction.returns`` values)
    accepts: ClassVar[tuple[str, ...]] = ("target", "direction", "scaled_direction")
    #: what the grid means, for plots and the shard column ``grid_kind``
    grid_kind: ClassVar[str] = "t"

    def __init__(self, cfg: ScheduleConfig):
        if cfg.n_steps < 2:
            raise ValueError(f"schedule.n_steps must be at least 2 (step 0 is the clean run), got {cfg.n_steps}")
        self.cfg = cfg

    @property
    def n_steps(self) -> int:
        return self.cfg.n_steps

    def walk(self, base_BD: Float[Tensor, "B d"], proposal: Proposal) -> Walk:
        """The walk from ``proposal.start_BD`` if the direction type set one, else from A."""
        return self.walk_from(base_BD if proposal.start_BD is None else proposal.start_BD, proposal)

    @abstractmethod
    def walk_from(self, origin_BD: Float[Tensor, "B d"], proposal: Proposal) -> Walk: ...
