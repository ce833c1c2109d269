"""The metric table: what a metric computes per step, what it summarises, what it writes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sensdir.config import MetricConfig
from sensdir.registry import Registry

METRICS: Registry[type[Metric]] = Registry("metric", "sensdir.metrics")

SummaryFn = Callable[[Float[Tensor, "N K"], Bool[Tensor, "N K"], MetricConfig], Int[Tensor, " N"]]


CensoredFn = Callable[[Int[Tensor, " N"], Bool[Tensor, "N K"]], Bool[Tensor, " N"]]


@dataclass(frozen=True)
class Summary:
    """One integer per row from a metric's curve, written as column ``column``.

    ``censored`` says which rows hold no event inside the walk (METHODS §10: a blowup at the
    last valid step, a plateau never left); it is written as the bool column
    ``<column>_censored`` and the reduce reports those rows apart. ``grid_kinds`` limits the
    walks on which the summary means something (the reduce reports it only there).
    """

    column: str
    compute: SummaryFn
    figure: str  # the reduce figure that draws it: "ms_step" or "plateau"
    label: str
    unit: str = "steps"
    censored: CensoredFn | None = None
    grid_kinds: tuple[str, ...] | None = None  # None: every schedule

    @property
    def censored_column(self) -> str | None:
        return f"{self.column}_censored" if self.censored is not None else None

    def describe(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "figure": self.figure,
            "label": self.label,
            "unit": self.unit,
            "censored_column": self.censored_column,
            "grid_kinds": list(self.grid_kinds) if self.grid_kinds is not None else None,
        }


@dataclass
class Readout:
    """What a metric may use to read its curve from the final residuals of a walk."""

    model: Any  # HookedTransformer
    logit_rows: int  # vocabulary-sized rows that fit the engine's logits budget
    workspace: Any = None  # reusable buffers of the lean path (sensdir.engine.lean.Workspace)
    compile: bool = False  # fuse vocabulary passes with torch.compile


class Metric(ABC):
    """Base class of metrics. Subclasses register with ``@METRICS.register(name, MetricConfig)``
    and set ``name`` to the same string."""

    name: ClassVar[str]
    label: ClassVar[str]  # axis label in figures
    unit: ClassVar[str] = ""  # of the curve's values, for axis labels
    summaries: ClassVar[tuple[Summary, ...]] = ()

    @abstractmethod
    def curve(self, final_wKD: Float[Tensor, "w K d"], readout: Readout) -> Float[Tensor, "w K"]:
        """The metric at every step of ``w`` walks, from the final residual at the perturbed
        position, against each walk's step 0 (so step 0 is exactly 0)."""

    @classmethod
    def fields(cls) -> list[pa.Field]:
        from sensdir.artifacts.schema import CURVE_TYPE, SUMMARY_TYPE

        fields = [pa.field(cls.name, CURVE_TYPE, nullable=False)]
        for s in cls.summaries:
            fields.append(pa.field(s.column, SUMMARY_TYPE, nullable=False))
            if s.censored_column is not None:
                fields.append(pa.field(s.censored_column, pa.bool_(), nullable=False))
        return fields

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """This metric's entry in a shard's metadata, which is all the reduce reads of it."""
        return {"label": cls.label, "unit": cls.unit, "summaries": [s.describe() for s in cls.summaries]}
