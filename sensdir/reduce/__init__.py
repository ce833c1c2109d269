"""Reduce a sweep's Parquet shards to statistics, figures, an HTML report and a W&B run.

``python -m sensdir.reduce SWEEP_DIR`` calls :func:`reduce_sweep`. Completeness is checked
first (plans against readable shards); incomplete data is refused unless ``allow_partial``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from sensdir.artifacts.records import dumps_json, write_text_atomic
from sensdir.reduce.completeness import Completeness, check_completeness
from sensdir.reduce.figures import group_labels, make_figures
from sensdir.reduce.html import write_html
from sensdir.reduce.outputs import check_out_dir, output_set
from sensdir.reduce.read import SweepData, read_sweep
from sensdir.reduce.saebench import write_saebench
from sensdir.reduce.secrets import sanitize
from sensdir.reduce.stats import stats_table
from sensdir.reduce.studies import reduce_studies
from sensdir.reduce.wb import log_run
from sensdir.reduce.wb_group import reduce_config, sweep_target

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
        elif r["section"] == "diagnostics" and r["value"] is not None:
            lab = labels.get((r["direction"], r["schedule"], r["sae"], r["hook"]), r["direction"])
            at = f"/t{r['x']:g}" if r["x"] is not None else ""
            out[f"{r['metric']}{at}/{lab}"] = r["value"]
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
    """Check, read, reduce; write the outputs as one set (``reduce.outputs``), then the W&B run.
    An incomplete sweep (unless ``allow_partial``) leaves only ``completeness.json``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    out = Path(out_dir) if out_dir is not None else sweep_dir / "reduce"
    check_out_dir(sweep_dir, out)
    comp = check_completeness(sweep_dir, progress=progress)
    if not comp.shards or (not comp.ok and not allow_partial):
        with output_set(out) as new:
            write_text_atomic(new / "completeness.json", dumps_json(sanitize(comp.to_dict())))
        raise IncompleteSweepError(comp)
    settings = {"allow_partial": allow_partial, "n_bootstrap": n_bootstrap, "seed": seed}
    with output_set(out) as new:
        result, data, table, index = _write_outputs(new, out, sweep_dir, comp, settings, n_examples, progress)
    reduce_prov = sanitize(_reduce_provenance())
    result.wandb = _publish(wandb, out, sweep_dir, comp, data, table, result.figures, settings, reduce_prov)
    index["wandb"] = result.wandb
    write_text_atomic(out / "reduce.json", dumps_json(sanitize(index)))
    return result


def _write_outputs(
    new: Path, out: Path, sweep_dir: Path, comp: Completeness, settings: dict[str, Any], n_examples: int, progress: bool
) -> tuple[ReduceResult, SweepData, Any, dict[str, Any]]:
    """Every output but the W&B run, into ``new``; paths in the result name their final place in ``out``."""
    write_text_atomic(new / "completeness.json", dumps_json(sanitize(comp.to_dict())))
    data = read_sweep(comp, n_examples=n_examples, progress=progress)
    studies = reduce_studies(comp, new / "figures", n_boot=settings["n_bootstrap"], seed=settings["seed"])
    table = stats_table(data, n_boot=settings["n_bootstrap"], seed=settings["seed"], extra_rows=studies.rows)
    pq.write_table(table, new / "stats.parquet")
    pcsv.write_csv(table, new / "stats.csv")
    figures = {**make_figures(data, table, new / "figures"), **studies.figures}
    write_html(
        new / "report.html",
        sweep_dir=sweep_dir,
        table=table,
        figures=figures,
        comp=comp,
        configs=sanitize(data.configs),
        provenance=sanitize(data.provenance),
        reduce_provenance=sanitize(_reduce_provenance()),
        study_tables=studies.tables,
        thresholds=data.thresholds,
    )
    versions = (next(iter(data.provenance.values()), {}) or {}).get("versions") or {}
    write_saebench(new, sweep_dir.resolve().name, table, sanitize(data.configs), versions, settings)
    final = {k: out / p.relative_to(new) for k, p in figures.items()}
    index = {
        "sweep_dir": str(sweep_dir),
        "complete": comp.ok,
        "n_rows": data.n_rows,
        "table": [str(out / "stats.parquet"), str(out / "stats.csv")],
        "figures": {k: str(v) for k, v in final.items()},
        "html": str(out / "report.html"),
        "wandb": {"mode": "pending"},  # rewritten once the W&B run is done
    }
    write_text_atomic(new / "reduce.json", dumps_json(sanitize(index)))
    result = ReduceResult(out, comp, out / "stats.parquet", out / "stats.csv", final, out / "report.html", {}, data.n_rows)
    return result, data, table, index


def _publish(
    wandb: str, out: Path, sweep_dir: Path, comp: Completeness, data: SweepData, table, figures, settings, reduce_prov
) -> dict[str, Any]:
    """The W&B run of the reduce (mode ``wandb``: auto, online, offline, disabled), in the jobs' group."""
    target = sweep_target(data.configs.values(), sweep_dir)
    config = reduce_config(sweep_dir, target.group, data, comp, settings, reduce_prov)
    notes = "" if comp.ok else "PARTIAL DATA: " + "; ".join(comp.problems())
    return log_run(
        wandb,
        out,
        table=table,
        figures=figures,
        config=sanitize(config),
        summary=_summary_scalars(data, table),
        sweep_name=target.group,
        notes=notes[:2000],
        project=target.project,
        entity=target.entity,
        group=target.group,
    )
