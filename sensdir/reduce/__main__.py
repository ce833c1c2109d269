"""``python -m sensdir.reduce SWEEP_DIR [--out DIR] [--allow-partial] [--wandb MODE] ...``

``--publish-report SWEEP``: build the sweep's W&B Report from its runs already on the server
(after ``wandb sync`` of offline runs) instead of reducing."""

from __future__ import annotations

import argparse
import os
import sys

from sensdir.reduce import IncompleteSweepError, reduce_sweep
from sensdir.reduce.wb import MODES


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sensdir.reduce", description=__doc__)
    p.add_argument("sweep_dir", help="a sweep directory, e.g. results/quickstart (--publish-report: or a W&B group name)")
    p.add_argument("--out", default=None, help="output directory (default: SWEEP_DIR/reduce)")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        default=_truthy(os.environ.get("SENSDIR_REDUCE_ALLOW_PARTIAL")),
        help="reduce incomplete data; the report lists what is missing (env SENSDIR_REDUCE_ALLOW_PARTIAL=1 also)",
    )
    p.add_argument(
        "--wandb",
        choices=MODES,
        default=os.environ.get("SENSDIR_REDUCE_WANDB", "auto"),
        help="auto: WANDB_MODE if set, else online if an API key is configured and the server answers, else offline; "
        "disabled (or WANDB_DISABLED=true): no W&B run. A W&B failure never fails the reduce",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs of the means")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--publish-report",
        action="store_true",
        help="do not reduce: build the W&B Report of SWEEP_DIR's group (or of the group named SWEEP_DIR) "
        "from its runs on the W&B server (sync offline runs first with wandb sync)",
    )
    p.add_argument("--project", default=None, help="--publish-report: the W&B project (default: the jobs' wandb.project)")
    p.add_argument("--entity", default=None, help="--publish-report: the W&B entity (default: the jobs' or the key's)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.publish_report:
        return _publish_report(a.sweep_dir, a.project, a.entity)
    try:
        res = reduce_sweep(
            a.sweep_dir,
            a.out,
            allow_partial=a.allow_partial,
            wandb=a.wandb,
            n_bootstrap=a.bootstrap,
            seed=a.seed,
            progress=not a.no_progress,
        )
    except IncompleteSweepError as e:
        print(f"sensdir.reduce: error: {e}", file=sys.stderr)
        return 3
    except (OSError, ValueError) as e:
        where = f"{e.filename}: " if isinstance(e, OSError) and e.filename and str(e.filename) not in str(e) else ""
        print(f"sensdir.reduce: error: {where}{e}", file=sys.stderr)
        return 2
    if not res.completeness.ok:
        print("sensdir.reduce: warning: partial data:\n  " + "\n  ".join(res.completeness.problems()), file=sys.stderr)
    print(f"sensdir.reduce: {res.n_rows} rows -> {res.out_dir}")
    print(f"  table:   {res.table_parquet}, {res.table_csv}")
    print(f"  figures: {', '.join(str(p) for p in res.figures.values())}")
    print(f"  report:  {res.html}")
    if res.wandb.get("run_dir"):
        print(
            f"  wandb:   {res.wandb['mode']} run {res.wandb['run_dir']}"
            + ("  (upload with: wandb sync " + res.wandb["run_dir"] + ")" if res.wandb["mode"] == "offline" else "")
        )
    if res.wandb.get("warning"):
        print(f"  wandb:   {res.wandb['mode']} ({res.wandb['warning']})")
    if res.wandb.get("report_url"):
        print(f"  wandb report: {res.wandb['report_url']}")
    return 0


def _publish_report(sweep: str, project: str | None, entity: str | None) -> int:
    from sensdir.reduce.wb_report import PublishError, publish_report

    try:
        url = publish_report(sweep, project, entity)
    except PublishError as e:
        print(f"sensdir.reduce: error: {e}", file=sys.stderr)
        return 2
    print(f"sensdir.reduce: W&B report: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
