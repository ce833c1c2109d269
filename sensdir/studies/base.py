"""What a study is given and what it returns.

A study computes one table: one row per unit of its result (a letter, an attribute value,
an SAE), identified by a ``row_key`` it can list before computing (the job's plan, so that
the reduce can tell a killed job from a finished one). The job adds ``row_id``, ``job_key``,
``study`` and ``seed`` columns and writes the table as a shard with its manifest; the reduce
calls the study's ``summarize`` on the table of each job to get tidy statistics rows and
figures for the report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from sensdir.config import MISSING
from sensdir.registry import Registry

if TYPE_CHECKING:
    import pyarrow as pa

    from sensdir.config import SensdirConfig
    from sensdir.site import Site

STUDIES: Registry[type[Study]] = Registry("study", "sensdir.studies")


@dataclass(frozen=True)
class StudyConfig:
    name: str = MISSING

    def label(self) -> str:
        return self.name


@dataclass
class StudyContext:
    cfg: SensdirConfig  # the whole job config (model, SAE, data, seed, ...)
    model: Any  # HookedTransformer
    sae: Any  # sae_lens SAE
    site: Site
    device: torch.device
    seed: int
    progress: bool = True


class Study(ABC):
    """Base class of studies. Subclasses register with ``@STUDIES.register``."""

    def __init__(self, cfg: StudyConfig, ctx: StudyContext):
        self.cfg = cfg
        self.ctx = ctx

    @abstractmethod
    def planned_keys(self) -> list[str]:
        """The ``row_key`` of every row ``run`` will return, known before any compute."""

    @abstractmethod
    def run(self) -> dict[str, list]:
        """The table, column name -> values; must contain ``row_key``."""

    # Hooks for the reduce: tidy rows (section, direction, schedule, sae, hook, metric,
    # statistic, x, value, n) for the statistics table, and PNG figures written to out_dir.
    summary_section: ClassVar[str] = ""

    @classmethod
    def summarize(cls, tables: list[tuple[dict, pa.Table]], out_dir: Path) -> tuple[list[dict], dict[str, Path]]:
        """``tables``: (manifest, table) per job of this study in the sweep."""
        return [], {}
