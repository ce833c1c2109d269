"""A schedule turns (base activation, proposal) into the activations of every step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from jaxtyping import Bool, Float
from torch import Tensor

from sensdir.config import ScheduleConfig
from sensdir.directions.base import Proposal
from sensdir.registry import Registry

SCHEDULES: Registry[type["Schedule"]] = Registry("schedule", "sensdir.schedules")


@dataclass
class Walk:
    """Step 0 is always the unperturbed activation (METHODS §2)."""

    acts_BKD: Float[Tensor, "B K d"]
    grid_BK: Float[Tensor, "B K"]  # interpolation t, or distance from A
    valid_BK: Bool[Tensor, "B K"]  # False for steps the schedule drops (kept as null in shards)


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
