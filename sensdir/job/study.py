"""A study's job: one table (a row per letter, attribute value, SAE, ...) as one shard."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from sensdir.artifacts.schema import build_study_table
from sensdir.config import SensdirConfig
from sensdir.errors import ConfigError
from sensdir.job.runner import Loaded
from sensdir.studies import StudyContext


class StudyTask:
    def __init__(self, cfg: SensdirConfig, loaded: Loaded, jkey: str, study_cls: type):
        self.cfg, self.jkey, self.kind = cfg, jkey, cfg.study.name
        ctx = StudyContext(
            cfg=cfg,
            model=loaded.model,
            sae=loaded.sae,
            site=loaded.site,
            device=loaded.device,
            seed=cfg.run.seed,
            progress=cfg.run.progress,
        )
        try:
            self.study = study_cls(cfg.study, ctx)
            self.keys = self.study.planned_keys()
        except ValueError as e:
            raise ConfigError(f"study {cfg.study.name!r}: {e}") from None

    def plan(self) -> list[str]:
        return [f"{self.jkey}/{k}" for k in self.keys]

    def batches(self) -> Iterator[dict[str, list]]:
        table = self.study.run()
        n = len(table["row_key"])
        yield {
            "row_id": [f"{self.jkey}/{k}" for k in table["row_key"]],
            "job_key": [self.jkey] * n,
            "study": [self.cfg.study.label()] * n,
            "seed": [self.cfg.run.seed] * n,
            **table,
        }

    def table(self, columns: dict[str, list], metadata: dict[str, Any]) -> pa.Table:
        return build_study_table(columns, metadata)

    def describe(self) -> dict[str, Any]:
        return {}

    def record(self) -> dict[str, Any]:
        return {}
