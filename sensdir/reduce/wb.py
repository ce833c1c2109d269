"""Weights & Biases: one run per reduce (summary table, figures, config), and, online, a
W&B Report built with ``wandb_workspaces.reports.v2``.

``auto`` is online when an API key is configured (``WANDB_API_KEY`` or a netrc entry for the
W&B host) and offline otherwise; offline runs land under ``<out>/wandb/`` and upload later
with ``wandb sync``. The key itself is never read into any config, table or file here.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

MODES = ("auto", "offline", "online", "disabled")
TABLE_KEY = "summary_table"
PROJECT = "sensdir"


def api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"wandb mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        return "online" if api_key_configured() else "offline"
    return mode


def image_key(name: str) -> str:
    return f"figures/{name}"


def build_report(entity: str, project: str, run_name: str, figure_names: list[str], sweep_name: str, notes: str = ""):
    """The W&B Report of one reduce run: description, the summary table and the figures.
    Built without any network access; ``.save()`` publishes it (online only)."""
    import wandb_workspaces.reports.v2 as wr

    runset = wr.Runset(entity=entity, project=project, name="this reduce", query=run_name)
    blocks: list[Any] = [
        wr.H1(f"sensdir sweep {sweep_name}"),
        wr.P(
            "Max-slope steps (KL and L2) and plateau lengths per direction type, KS against real, "
            "bootstrap CIs of the means [GP24]; error-pathology ratios [G24, LH24] and KL vs length "
            "per SAE [LH24] where the sweep has them."
        ),
    ]
    if notes:
        blocks.append(wr.CalloutBlock(text=notes))
    blocks.append(wr.H2("Summary statistics"))
    blocks.append(
        wr.PanelGrid(
            runsets=[runset],
            panels=[wr.WeavePanelSummaryTable(table_name=TABLE_KEY, layout=wr.Layout(x=0, y=0, w=24, h=12))],
        )
    )
    blocks.append(wr.H2("Figures"))
    panels: list[Any] = [
        wr.MediaBrowser(title=name, media_keys=[image_key(name)], layout=wr.Layout(x=(i % 2) * 12, y=(i // 2) * 10, w=12, h=10))
        for i, name in enumerate(figure_names)
    ]
    blocks.append(wr.PanelGrid(runsets=[runset], panels=panels))
    return wr.Report(entity=entity, project=project, title=f"sensdir reduce: {sweep_name}", description=notes, blocks=blocks)


def log_run(
    mode: str,
    out_dir: Path,
    *,
    table: pa.Table,
    figures: dict[str, Path],
    config: dict[str, Any],
    summary: dict[str, float],
    sweep_name: str,
    notes: str = "",
    project: str | None = None,
    entity: str | None = None,
) -> dict[str, Any]:
    """Log one run; returns {mode, run_dir, run_id, report_url}. ``config`` must be sanitized."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        return {"mode": mode, "run_dir": None, "run_id": None, "report_url": None}
    import wandb

    project = project or os.environ.get("WANDB_PROJECT") or PROJECT
    settings = wandb.Settings(console="off", save_code=False, disable_git=True, x_disable_stats=True)
    run = wandb.init(
        mode=mode,  # type: ignore[arg-type]  # checked against MODES by resolve_mode
        dir=str(out_dir),
        project=project,
        entity=entity,
        name=f"reduce-{sweep_name}",
        job_type="reduce",
        config=config,
        notes=notes or None,
        settings=settings,
    )
    try:
        cols = table.column_names
        run.log(
            {
                TABLE_KEY: wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in table.to_pylist()]),
                **{image_key(name): wandb.Image(str(path), caption=name) for name, path in figures.items()},
            }
        )
        run.summary.update(summary)
        run_dir = Path(run.dir).parent
        run_id, run_name, run_entity = run.id, run.name, run.entity
    finally:
        run.finish()
    report_url = None
    if mode == "online":
        report = build_report(run_entity, project, str(run_name), list(figures), sweep_name, notes)
        report.save()
        report_url = report.url
    return {"mode": mode, "run_dir": str(run_dir), "run_id": run_id, "report_url": report_url}
