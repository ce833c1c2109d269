"""``sensdir-reduce --publish-report SWEEP``: the W&B Report of a sweep, built from its runs
once they are on the server (jobs and reduce run offline on compute nodes, then ``wandb
sync`` from a login node).

The runs of the sweep's group are queried through ``wandb.Api``; the report has the panels
the reduce's own report has (summary table and figures of the newest reduce run of the
group) and, for the jobs' runs, the per-step mean curves grouped by ``job_type`` (the
direction type). ``report_from_runs`` builds it from plain ``RunRecord``s, without any
network; ``publish_report`` fails with a ``PublishError`` (one line) when the server cannot
be used: offline mode, no API key, no answer, no runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensdir.reduce.wb import DEFAULT_BASE_URL, PROJECT, api_key_configured, reduce_blocks, server_answers
from sensdir.reduce.wb_group import SweepTarget, sweep_target

REDUCE_JOB_TYPE = "reduce"
_CURVE = re.compile(r"^curve/(.+)_mean$")


class PublishError(RuntimeError):
    """The report cannot be published; the message says why and what to do."""


@dataclass(frozen=True)
class RunRecord:
    """What the report needs of one W&B run."""

    id: str
    name: str
    job_type: str | None
    summary_keys: tuple[str, ...] = ()
    notes: str = ""

    @classmethod
    def of(cls, run: Any) -> RunRecord:
        """From a ``wandb.apis.public.Run``."""
        keys = tuple(k for k in dict(run.summary_metrics or {}) if not k.startswith("_"))
        return cls(str(run.id), str(run.name), run.job_type, keys, getattr(run, "notes", None) or "")


def _runset(target: SweepTarget, entity: str, name: str, jobs: bool, query: str = ""):
    import wandb_workspaces.reports.v2 as wr

    group = target.group.replace("'", "\\'")
    op = "!=" if jobs else "="
    return wr.Runset(
        entity=entity,
        project=target.project,
        name=name,
        query=query,
        filters=f"Group = '{group}' and JobType {op} '{REDUCE_JOB_TYPE}'",
        groupby=["JobType"] if jobs else [],
    )


def job_blocks(target: SweepTarget, entity: str, metrics: list[str]) -> list[Any]:
    """Per metric, the jobs' per-step mean curves, one line per direction type."""
    import wandb_workspaces.reports.v2 as wr

    runset = _runset(target, entity, "jobs", jobs=True)
    panels: list[Any] = [
        wr.LinePlot(
            title=f"mean {m} per step",
            x="walk_step",
            y=[f"curve/{m}_mean"],
            title_x="walk step",
            title_y=f"mean {m}",
            layout=wr.Layout(x=(i % 2) * 12, y=(i // 2) * 8, w=12, h=8),
        )
        for i, m in enumerate(metrics)
    ]
    return [wr.H2("Jobs: mean curves per direction type"), wr.PanelGrid(runsets=[runset], panels=panels)]


def report_from_runs(target: SweepTarget, entity: str, runs: Iterable[RunRecord]):
    """The sweep's report from its runs (newest first): the newest reduce run's panels, then
    the jobs' curves. Built without any network access; ``.save()`` publishes it."""
    import wandb_workspaces.reports.v2 as wr

    runs = list(runs)
    reduce_run = next((r for r in runs if r.job_type == REDUCE_JOB_TYPE), None)
    jobs = [r for r in runs if r.job_type != REDUCE_JOB_TYPE]
    if reduce_run is not None:
        figures = [k.removeprefix("figures/") for k in reduce_run.summary_keys if k.startswith("figures/")]
        runset = _runset(target, entity, "this reduce", jobs=False, query=reduce_run.name)
        blocks = reduce_blocks(runset, figures, target.group, reduce_run.notes)
    else:
        blocks = [
            wr.H1(f"sensdir sweep {target.group}"),
            wr.CalloutBlock(text="No reduce run in this group yet: run sensdir-reduce on the sweep and sync its run."),
        ]
    metrics = sorted({m.group(1) for r in jobs for k in r.summary_keys if (m := _CURVE.match(k)) and m.group(1) != "grid"})
    if jobs and metrics:
        blocks += job_blocks(target, entity, metrics)
    notes = reduce_run.notes if reduce_run is not None else ""
    return wr.Report(
        entity=entity, project=target.project, title=f"sensdir sweep: {target.group}", description=notes, blocks=blocks
    )


def target_of(sweep: str, project: str | None = None, entity: str | None = None) -> SweepTarget:
    """The group of ``sweep``: a sweep folder (its jobs' configs say the group, as for the
    reduce) or else the group's name itself."""
    from sensdir.artifacts.layout import MANIFEST, find_job_dirs, shard_files_in
    from sensdir.artifacts.records import read_json

    path = Path(sweep)
    if path.is_dir():
        manifests = (read_json(m) for d in find_job_dirs(path) for m in shard_files_in(d, MANIFEST).values())
        found = sweep_target((m["config"] for m in manifests if m and isinstance(m.get("config"), dict)), path)
    else:
        found = SweepTarget(sweep, os.environ.get("WANDB_PROJECT") or PROJECT, os.environ.get("WANDB_ENTITY") or None)
    return SweepTarget(found.group, project or found.project, entity or found.entity)


def _check_reachable() -> None:
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("offline", "dryrun", "disabled") or os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true"):
        raise PublishError(
            f"W&B is set to run without its server here (WANDB_MODE={env or 'unset'}, WANDB_DISABLED="
            f"{os.environ.get('WANDB_DISABLED', 'unset')}); publish the report from a machine that reaches it"
        )
    if not api_key_configured():
        raise PublishError("no W&B API key: run `wandb login` or set WANDB_API_KEY, then publish again")
    url = os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)
    if not server_answers():
        raise PublishError(f"the W&B server {url} does not answer; publish the report from a machine that reaches it")


def publish_report(sweep: str, project: str | None = None, entity: str | None = None) -> str:
    """Query the runs of ``sweep``'s group, build its report, save it; returns the report's URL."""
    _check_reachable()
    target = target_of(sweep, project, entity)
    try:
        import wandb

        api = wandb.Api(timeout=30)
        owner = target.entity or api.default_entity
        path = f"{owner}/{target.project}"
        found = api.runs(path, filters={"group": target.group}, order="-created_at", lazy=False)
        runs = [RunRecord.of(r) for r in found]
    except Exception as e:  # noqa: BLE001 - any API failure is the user's to see in one line
        raise PublishError(f"cannot query the W&B runs of group {target.group!r} ({type(e).__name__}: {e})") from None
    if not runs:
        raise PublishError(
            f"no runs of group {target.group!r} in {path}: upload them first "
            f"(wandb sync <sweep>/wandb/offline-run-* <sweep>/reduce/wandb/offline-run-*)"
        )
    try:
        report = report_from_runs(target, str(owner), runs)
        report.save()
    except Exception as e:  # noqa: BLE001
        raise PublishError(f"the W&B Report could not be saved ({type(e).__name__}: {e})") from None
    return str(report.url)
