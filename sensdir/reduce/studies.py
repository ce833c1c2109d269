"""The reduce's part for study shards: each study summarizes its own tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sensdir.reduce.completeness import Completeness


@dataclass
class StudyResults:
    rows: list[dict] = field(default_factory=list)  # tidy rows for the statistics table
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, pa.Table] = field(default_factory=dict)  # study -> all its rows, for the report


def reduce_studies(comp: Completeness, out_dir: Path, n_boot: int = 1000, seed: int = 0) -> StudyResults:
    """Each study's rows, figures and table; also the error-correction fit of the walks (METHODS §11)."""
    from sensdir.reduce.error_correction import error_correction_results
    from sensdir.studies import STUDIES

    by_kind: dict[str, list[tuple[dict, pa.Table]]] = {}
    for sf in comp.shards:
        if sf.kind != "walk":
            by_kind.setdefault(sf.kind, []).append((sf.manifest or {}, pq.read_table(sf.path)))
    res = StudyResults()
    for kind, tables in sorted(by_kind.items()):
        res.tables[kind] = pa.concat_tables([t.replace_schema_metadata(None) for _, t in tables], promote_options="default")
        study = STUDIES.get(kind).impl
        rows, figs = study.summarize(tables, out_dir)
        res.rows.extend(rows)
        res.figures.update(figs)
    out_dir.mkdir(parents=True, exist_ok=True)
    ec_rows, ec_figs, ec_tables = error_correction_results(comp, out_dir, n_boot, seed)
    res.rows.extend(ec_rows)
    res.figures.update(ec_figs)
    res.tables.update(ec_tables)
    return res
