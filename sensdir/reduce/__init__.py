"""Reduce a sweep's Parquet shards to statistics, figures, an HTML report and a W&B run.

``python -m sensdir.reduce SWEEP_DIR`` calls :func:`reduce_sweep`. Completeness is checked
first (plans against readable shards); incomplete data is refused unless ``allow_partial``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from sensdir.reduce.completeness import Completeness, check_completeness
from sensdir.reduce.figures import group_labels, make_figures
from sensdir.reduce.html import write_html
from sensdir.reduce.read import SweepData, read_sweep
from sensdir.reduce.secrets import sanitize
from sensdir.reduce.stats import stats_table
from sensdir.reduce.studies import reduce_studies
from sensdir.reduce.wb import log_run

__all__ = ["IncompleteSweepError", "ReduceResult", "reduce_sweep"]


class IncompleteSweepError(RuntimeError):
    """The sweep's data are incomplete and partial results were not allowed."""

    def __init__(self, comp: Completeness):
        self.completeness = comp
        lines = comp.problems() or ["no readable shards"]
        super().__init__(
            f"sweep {comp.sweep_dir} is incomplete ({comp.summary()}):\n  "
            + "\n  ".join(lines)
            + "\nrerun the missing jobs, or reduce what is there with --allow-partial"
        )


@dataclass
class ReduceResult:
    out_dir: Path
    completeness: Completeness
    table_parquet: Path
    table_csv: Path
    figures: dict[str, Path]
    html: Path
    wandb: dict[str, Any] = field(default_factory=dict)
    n_rows: int = 0


def _reduce_provenance() -> dict[str, Any]:
    from sensdir.provenance import provenance

    prov = provenance()
    versions: dict[str, str | None] = prov["versions"]  # type: ignore[assignment]
    for pkg in ("scipy", "matplotlib", "wandb", "wandb-workspaces"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return prov


def _summary_scalars(data: SweepData, table) -> dict[str, float]:
    labels = {(g.direction, g.schedule, g.sae, g.hook): lab for g, lab in zip(data.groups, group_labels(data.groups))}
    out = {}
    for r in table.to_pylist():
        if r["section"] == "summary" and r["statistic"] in ("mean", "ks_vs_real") and r["value"] is not None:
            lab = labels.get((r["direction"], r["schedule"], r["sae"], r["hook"]), r["direction"])
            out[f"{r['metric']}/{r['statistic']}/{lab}"] = r["value"]
    return out


def reduce_sweep(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    allow_partial: bool = False,
    wandb: str = "auto",
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = True,
    n_examples: int = 3,
) -> ReduceResult:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    out = Path(out_dir) if out_dir is not None else sweep_dir / "reduce"
    out.mkdir(parents=True, exist_ok=True)

    comp = check_completeness(sweep_dir, progress=progress)
    (out / "completeness.json").write_text(json.dumps(sanitize(comp.to_dict()), indent=2))
    if not comp.shards or (not comp.ok and not allow_partial):
        raise IncompleteSweepError(comp)

    data = read_sweep(comp, n_examples=n_examples, progress=progress)
    studies = reduce_studies(comp, out / "figures")
    table = stats_table(data, n_boot=n_bootstrap, seed=seed, extra_rows=studies.rows)
    table_parquet, table_csv = out / "stats.parquet", out / "stats.csv"
    pq.write_table(table, table_parquet)
    pcsv.write_csv(table, table_csv)
    figures = {**make_figures(data, table, out / "figures"), **studies.figures}
    reduce_prov = sanitize(_reduce_provenance())
    html_path = write_html(
        out / "report.html",
        sweep_dir=sweep_dir,
        table=table,
        figures=figures,
        comp=comp,
        configs=sanitize(data.configs),
        provenance=sanitize(data.provenance),
        reduce_provenance=reduce_prov,
        study_tables=studies.tables,
    )
    settings = {"allow_partial": allow_partial, "n_bootstrap": n_bootstrap, "seed": seed}
    wb = _publish(wandb, out, sweep_dir, comp, data, table, figures, settings, reduce_prov)
    result = ReduceResult(out, comp, table_parquet, table_csv, figures, html_path, wb, data.n_rows)
    index = {
        "sweep_dir": str(sweep_dir),
        "complete": comp.ok,
        "n_rows": data.n_rows,
        "table": [str(table_parquet), str(table_csv)],
        "figures": {k: str(v) for k, v in figures.items()},
        "html": str(html_path),
        "wandb": wb,
    }
    (out / "reduce.json").write_text(json.dumps(sanitize(index), indent=2))
    return result


def _publish(
    wandb: str, out: Path, sweep_dir: Path, comp: Completeness, data: SweepData, table, figures, settings, reduce_prov
) -> dict[str, Any]:
    """The W&B run of the reduce (mode ``wandb``: auto, online, offline, disabled)."""
    config = {
        "sweep_dir": str(sweep_dir.resolve()),
        "reduce": settings,
        "complete": comp.ok,
        "n_rows": data.n_rows,
        "jobs": sanitize(data.configs),
        "provenance": reduce_prov,
    }
    notes = "" if comp.ok else "PARTIAL DATA: " + "; ".join(comp.problems())
    return log_run(
        wandb,
        out,
        table=table,
        figures=figures,
        config=sanitize(config),
        summary=_summary_scalars(data, table),
        sweep_name=sweep_dir.resolve().name,
        notes=notes[:2000],
    )
