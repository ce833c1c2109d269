"""Weights & Biases: one run per reduce (summary table, figures, flat config) in the sweep's
group beside the jobs' runs (``job_type="reduce"``), and, online, a W&B Report built with
``wandb_workspaces.reports.v2`` (``sensdir.reduce.wb_report`` builds one later from synced runs).

The mode (``resolve_mode``): ``WANDB_DISABLED=true`` disables W&B whatever else is asked; an
explicit ``online``/``offline``/``disabled`` is taken as given; ``auto`` follows ``WANDB_MODE``
where it is set, and otherwise is online only when an API key is configured
(``WANDB_API_KEY`` or a netrc entry for the W&B host) *and* the server
(``WANDB_BASE_URL``) answers within ``SENSDIR_WANDB_TIMEOUT`` seconds (default 5); else
offline. Offline runs land under ``<out>/wandb/`` and upload later with ``wandb sync``.

W&B never fails a reduce (``log_run``): an online run that fails falls back to an offline one,
and an offline run that fails leaves none; each with one warning line on stderr. The key
itself is never read into any config, table or file here.
"""

from __future__ import annotations

import netrc
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

MODES = ("auto", "offline", "online", "disabled")
TABLE_KEY = "summary_table"
PROJECT = "sensdir"
DEFAULT_BASE_URL = "https://api.wandb.ai"
_ENV_MODES = {"disabled": "disabled", "offline": "offline", "dryrun": "offline", "online": "online", "run": "online"}


def _seconds(var: str, default: float) -> float:
    try:
        return max(0.1, float(os.environ.get(var, default)))
    except ValueError:
        return default


def server_answers(timeout: float | None = None) -> bool:
    """Whether the W&B server answers an HTTP request at all (any status) within ``timeout`` s."""
    timeout = _seconds("SENSDIR_WANDB_TIMEOUT", 5.0) if timeout is None else timeout
    url = os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL).rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, if only with an error status
    except (OSError, ValueError):
        return False


def _warn(message: str) -> str:
    """Print ``message`` as one warning line; returns that line's text."""
    line = " ".join(message.split())[:400]
    print(f"sensdir.reduce: warning: {line}", file=sys.stderr)
    return line


def api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str, probe: Callable[[], bool] = server_answers) -> str:
    if mode not in MODES:
        raise ValueError(f"wandb mode must be one of {', '.join(MODES)}, got {mode!r}")
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        return "disabled"
    if mode != "auto":
        return mode
    env = _ENV_MODES.get(os.environ.get("WANDB_MODE", "").strip().lower())
    if env is not None:
        return env
    if not api_key_configured():
        return "offline"
    if not probe():
        _warn(
            f"an API key is set but the W&B server {os.environ.get('WANDB_BASE_URL', DEFAULT_BASE_URL)} does not answer: logging offline"
        )
        return "offline"
    return "online"


def image_key(name: str) -> str:
    return f"figures/{name}"


def reduce_blocks(runset: Any, figure_names: list[str], sweep_name: str, notes: str = "") -> list[Any]:
    """The report's blocks of one reduce run (``runset`` selects it): description, the summary
    table, the figures. Shared by the reduce's own report and ``--publish-report``."""
    import wandb_workspaces.reports.v2 as wr

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
    return blocks


def build_report(entity: str, project: str, run_name: str, figure_names: list[str], sweep_name: str, notes: str = ""):
    """The W&B Report of one reduce run: description, the summary table and the figures.
    Built without any network access; ``.save()`` publishes it (online only)."""
    import wandb_workspaces.reports.v2 as wr

    runset = wr.Runset(entity=entity, project=project, name="this reduce", query=run_name)
    blocks = reduce_blocks(runset, figure_names, sweep_name, notes)
    return wr.Report(entity=entity, project=project, title=f"sensdir reduce: {sweep_name}", description=notes, blocks=blocks)


def log_run(mode: str, out_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """Log one run (``_log_once``'s keyword arguments); returns {mode, run_dir, run_id,
    report_url} and, where W&B failed, ``warning``. Never raises for a W&B failure."""
    mode = resolve_mode(mode)
    none: dict[str, Any] = {"mode": "disabled", "run_dir": None, "run_id": None, "report_url": None}
    if mode == "disabled":
        return none
    warning = None
    if mode == "online":
        try:
            return _log_once("online", out_dir, **kwargs)
        except Exception as e:  # noqa: BLE001 - no W&B failure may fail the reduce
            warning = _warn(f"the online W&B run failed ({type(e).__name__}: {e}); logging offline instead")
    try:
        return {**_log_once("offline", out_dir, **kwargs), **({"warning": warning} if warning else {})}
    except Exception as e:  # noqa: BLE001
        warning = _warn(f"the offline W&B run failed ({type(e).__name__}: {e}); no W&B run")
        return {**none, "mode": "failed", "warning": warning}


def _log_once(
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
    group: str | None = None,
) -> dict[str, Any]:
    """One run in ``mode`` (online or offline), in the jobs' ``group``. ``config`` must be sanitized."""
    import wandb

    project = project or os.environ.get("WANDB_PROJECT") or PROJECT
    settings = wandb.Settings(
        console="off",
        save_code=False,
        disable_git=True,
        x_disable_stats=True,
        init_timeout=_seconds("SENSDIR_WANDB_INIT_TIMEOUT", 30.0),
    )
    run = wandb.init(
        mode=mode,  # type: ignore[arg-type]  # online or offline
        dir=str(out_dir),
        project=project,
        entity=entity,
        name=f"reduce-{sweep_name}",
        group=group or sweep_name,
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
        try:
            report = build_report(run_entity, project, str(run_name), list(figures), sweep_name, notes)
            report.save()
            report_url = report.url
        except Exception as e:  # noqa: BLE001 - the run is logged; the report is extra
            _warn(f"the W&B Report could not be saved ({type(e).__name__}: {e})")
    return {"mode": mode, "run_dir": str(run_dir), "run_id": run_id, "report_url": report_url}
