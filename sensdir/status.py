"""``python -m sensdir.status SWEEP_DIR [--json]``: which jobs and shards of a sweep are done,
running or failed, and where a failed task's log is.

SWEEP_DIR is ``<run.out_dir>/<run.name>`` (what the reduce reads) or one Hydra sweep directory
under its ``hydra/``. Every SLURM task that ``hydra/launcher=slurm`` submitted has a folder
``<sweep dir>/.submitit/<array id>_<task>/`` with the pickled submission (the job's overrides),
its logs and, once it has ended, its result. From these, the shard files and ``squeue``:

- ``done``: the shard's manifest is complete (docs/shards.md);
- ``running`` / ``pending``: no complete manifest and SLURM still lists the task (a requeued
  task is ``pending`` until it starts again);
- ``failed``: the task ended with an error, or it is gone from ``squeue`` without a complete
  shard (killed, out of memory, node failure); the line names its stderr log;
- ``unknown``: as failed, but ``squeue`` could not be asked;
- ``superseded``: a failed or cancelled task whose shard a later task (a rerun of the sweep)
  took on; not counted as a failure.

Each SLURM task shows what ``squeue`` says of it, with the pending reason (e.g.
``PartitionConfig``: the job asks more than the node has and will never start). A task with no
log yet says "never started"; a failed task's error line is its last real error, not
progress-bar debris.

Shards of jobs that ran without SLURM (``hydra/launcher=local``) are listed from their files:
``done`` or ``incomplete`` (a plan without a complete manifest). Shards that a multirun's
sweep plan (``<sweep>/plans/``) lists but that no task accounts for and that left no file are
``not_started`` (the multirun was interrupted before them), with their overrides. A shard is
``done`` only if its Parquet file holds the bytes its manifest recorded (sha256). Exit status:
0 when every task and shard is done, 1 when one failed or never started, 3 when some are still
running or pending.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sensdir.artifacts.identity import config_hash, job_dir
from sensdir.artifacts.layout import MANIFEST, PLAN, ShardFiles, shard_files_in
from sensdir.artifacts.records import complete_manifest, dumps_json, is_complete
from sensdir.artifacts.sweep_plan import never_started, read_sweep_plans
from sensdir.slurm_queue import CANNOT_START, last_error_line, squeue_info

_TASK_DIR = re.compile(r"^(\d+)(?:_(\d+))?$")
STATES = ("done", "running", "pending", "failed", "unknown", "incomplete", "not_started", "superseded")


@dataclass
class TaskStatus:
    """One SLURM task (one job of the multirun), or one shard seen only on disk (task_id None)."""

    state: str
    task_id: str | None = None  # "<array id>_<index>"
    job_num: int | None = None  # Hydra's job number in the multirun
    overrides: list[str] = field(default_factory=list)  # the overrides that differ between tasks
    job_key: str | None = None  # <direction>-<hash>: the job directory's name
    shard: int | None = None
    shards: int | None = None
    job_dir: str | None = None
    plan: bool = False  # the shard's plan file exists (the task got past its checks)
    slurm_state: str | None = None  # what squeue says, if it lists the task
    slurm_reason: str | None = None  # squeue's reason (why a task is pending)
    log_err: str | None = None
    log_out: str | None = None
    error: str | None = None

    @property
    def shard_name(self) -> str:
        if self.job_key is None or self.shard is None:
            return "?"
        return f"{self.job_key}/s{self.shard}of{self.shards}"


@dataclass
class SweepStatus:
    sweep_dir: Path
    tasks: list[TaskStatus]
    squeue_ok: bool

    def counts(self) -> dict[str, int]:
        c = Counter(t.state for t in self.tasks)
        return {s: c[s] for s in STATES if c[s]}

    @property
    def exit_code(self) -> int:
        c = self.counts()
        if c.get("failed") or c.get("unknown") or c.get("incomplete") or c.get("not_started"):
            return 1
        if c.get("running") or c.get("pending"):
            return 3
        return 0

    def by_state(self, state: str) -> list[TaskStatus]:
        return [t for t in self.tasks if t.state == state]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_dir": str(self.sweep_dir),
            "counts": self.counts(),
            "squeue_ok": self.squeue_ok,
            "tasks": [{**asdict(t), "shard_name": t.shard_name} for t in self.tasks],
        }

    def render(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items()) or "nothing found"
        lines = [f"{self.sweep_dir}: {len(self.tasks)} task(s)/shard(s): {counts}"]
        if not self.squeue_ok:
            lines.append("  (squeue could not be run: tasks without a result are 'unknown')")
        width = max([len(t.task_id or "-") for t in self.tasks] + [4])
        swidth = max([len(t.shard_name) for t in self.tasks] + [5])
        lines.append(f"  {'TASK':<{width}}  {'STATE':<10}  {'SHARD':<{swidth}}  OVERRIDES")
        for t in self.tasks:
            state = t.state + ("*" if t.slurm_state and t.state in ("running", "pending") and t.plan else "")
            slurm = f"  [SLURM {t.slurm_state}{': ' + t.slurm_reason if t.slurm_reason else ''}]" if t.slurm_state else ""
            lines.append(f"  {t.task_id or '-':<{width}}  {state:<10}  {t.shard_name:<{swidth}}  {' '.join(t.overrides)}{slurm}")
            pad = f"  {'':<{width}}    "
            if t.slurm_reason in CANNOT_START:
                lines.append(f"{pad}cannot start: SLURM says {t.slurm_reason} (it asks for more than the partition allows?)")
            if t.state in ("failed", "unknown", "incomplete", "not_started", "superseded"):
                if t.error:
                    lines.append(f"{pad}error: {t.error}")
                if t.log_err:
                    lines.append(f"{pad}log:   {t.log_err}")
                elif t.task_id and t.state != "superseded":
                    lines.append(f"{pad}log:   none (the task never started)")
        if any(t.plan and t.state in ("running", "pending") for t in self.tasks):
            lines.append("  (* the task had written its plan: it was computing its shard)")
        return "\n".join(lines)


# -- SLURM side ------------------------------------------------------------------------------
def squeue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """``{"<array>_<index>": state}`` for the arrays given, one line per task; None if squeue fails."""
    info = squeue_info(job_ids)
    return None if info is None else {k: v[0] for k, v in info.items()}


@dataclass
class _Task:
    task_id: str
    folder: Path

    def file(self, suffix: str) -> Path:
        return self.folder / f"{self.task_id}{suffix}"


def find_tasks(sweep_dir: Path) -> list[_Task]:
    """The submitit task folders under ``sweep_dir`` (``.submitit/<array>_<index>/``)."""
    out = []
    for sub in sorted(sweep_dir.rglob(".submitit")):
        for d in sub.iterdir():
            m = _TASK_DIR.match(d.name)
            if d.is_dir() and m and (d / f"{d.name}_submitted.pkl").exists():
                out.append(_Task(d.name, d))
    return sorted(out, key=lambda t: tuple(int(x) for x in t.task_id.split("_")))


def _load_submission(task: _Task):
    from submitit.helpers import DelayedSubmission

    return DelayedSubmission.load(task.file("_submitted.pkl"))


def _compose(delayed) -> tuple[Any, str | None]:
    """The task's ``SensdirConfig`` as its SLURM task composes it, or (None, why not).

    First with the config store pickled at submission (exactly what the task sees), then, if
    that fails (e.g. the code's schemas changed since), with this process's own."""
    from hydra.core.singleton import Singleton
    from omegaconf import open_dict

    from sensdir.config import register_configs, to_config

    launcher, args = delayed.function, delayed.args
    own_state = Singleton.get_state()
    error = None
    for state in (args[4], None):
        try:
            if state is None:
                Singleton.set_state(own_state)
                register_configs()
            else:
                Singleton.set_state(state)
            cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(args[0]))
            with open_dict(cfg):
                del cfg["hydra"]
            return to_config(cfg), None
        except Exception as e:  # noqa: BLE001 - an invalid config is that task's failure
            error = error or f"{type(e).__name__}: {e}".strip()
        finally:
            Singleton.set_state(own_state)
    return None, error


def _driver_cwd(delayed) -> Path:
    try:
        return Path(delayed.function.config.hydra.runtime.cwd)
    except Exception:  # noqa: BLE001
        return Path.cwd()


def _read_result(task: _Task) -> tuple[str, str | None] | None:
    """("ok", None) / ("failed", message) from the task's result pickle; None if it has none."""
    path = task.file("_0_result.pkl")
    if not path.exists():
        return None
    try:
        with path.open("rb") as f:
            kind, value = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - an unreadable result is a failure to report
        return "failed", f"unreadable result {path}: {e}"
    if kind != "success":
        return "failed", last_error_line(str(value))
    status = getattr(value, "status", None)
    if status is not None and status.name == "FAILED":
        err = getattr(value, "_return_value", None)
        return "failed", f"{type(err).__name__}: {err}" if err is not None else "failed"
    return "ok", None


def _varying(overrides: list[list[str]]) -> set[str]:
    """Override keys whose value differs between tasks (the swept ones)."""
    dicts = [dict(o.partition("=")[::2] for o in ovs) for ovs in overrides]
    keys = set().union(*dicts) if dicts else set()
    varying = {k for k in keys if len({d.get(k) for d in dicts}) > 1}
    return varying or {k for k in keys if k.lstrip("+~") in ("direction", "run.shard")}


# -- the view --------------------------------------------------------------------------------
def sweep_status(sweep_dir: str | Path, squeue: dict[str, str] | None | bool = True) -> SweepStatus:
    """The status of every task and shard under ``sweep_dir``. ``squeue``: True to ask SLURM,
    or a ready ``{task id: state}`` (tests), or None for "SLURM not reachable"."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep directory {sweep_dir}")
    tasks = find_tasks(sweep_dir)
    live: dict[str, tuple[str, str]] | None = None
    if squeue is True:
        live = squeue_info(t.task_id for t in tasks)
    elif isinstance(squeue, dict):
        live = {k: (v, "") for k, v in squeue.items()}
    subs = []
    for task in tasks:
        try:
            subs.append(_load_submission(task))
        except Exception:  # noqa: BLE001
            subs.append(None)
    all_overrides = [list(s.args[0]) if s is not None else [] for s in subs]
    varying = _varying([o for o in all_overrides if o])
    seen_shards: set[tuple[str, int, int]] = set()
    out = [_task_status(task, sub, ovs, varying, live, seen_shards) for task, sub, ovs in zip(tasks, subs, all_overrides)]
    _supersede(out)
    out += _disk_only_shards(sweep_dir, seen_shards)
    out += _not_started(sweep_dir, seen_shards)
    return SweepStatus(sweep_dir, out, squeue_ok=live is not None)


def _task_status(task: _Task, sub, ovs: list[str], varying: set[str], live, seen_shards: set) -> TaskStatus:
    st = TaskStatus(state="unknown", task_id=task.task_id, overrides=[o for o in ovs if o.partition("=")[0] in varying])
    st.log_err, st.log_out = str(task.file("_0_log.err")), str(task.file("_0_log.out"))
    cfg, compose_error = (None, "unreadable submission") if sub is None else _compose(sub)
    if sub is not None:
        st.job_num = sub.args[2]
    complete = False
    if cfg is not None:
        jdir = job_dir(cfg)
        if not jdir.is_absolute():  # relative to where the sweep was started
            jdir = _driver_cwd(sub) / jdir
        jdir = jdir.resolve()  # one spelling per shard, however the sweep was named
        files = ShardFiles.of(jdir, cfg.run.shard, cfg.run.shards)
        st.job_key, st.shard, st.shards, st.job_dir = jdir.name, cfg.run.shard, cfg.run.shards, str(jdir)
        st.plan = files.plan.exists()
        complete = is_complete(files, config_hash(cfg))
        seen_shards.add((str(jdir), cfg.run.shard, cfg.run.shards))
    result = _read_result(task)
    if isinstance(live, dict) and task.task_id in live:
        st.slurm_state, st.slurm_reason = live[task.task_id][0], live[task.task_id][1] or None
    started = Path(st.log_err).exists() or Path(st.log_out).exists()
    if complete:  # also where a later rerun of the sweep completed this task's shard
        st.state = "done"
    elif result is not None and result[0] == "failed":
        st.state, st.error = "failed", result[1] or _log_error(task)
    elif st.slurm_state is not None:
        st.state = "running" if st.slurm_state in ("RUNNING", "COMPLETING", "CONFIGURING") else "pending"
    elif result is not None and result[0] == "ok":
        st.state, st.error = "failed", "the task ended but its shard is not complete"
    else:
        st.state = "unknown" if live is None else "failed"
        lost = (
            "no result: the task was killed or lost (see its log)"
            if started
            else "never started (no log): cancelled or lost before it ran"
        )
        st.error = compose_error or _log_error(task) or lost
    if st.state == "failed" and compose_error and not st.error:
        st.error = compose_error
    if not started:
        st.log_err = st.log_out = None
    return st


def _supersede(tasks: list[TaskStatus]) -> None:
    """A failed task whose shard a later task (a rerun of the sweep) took on is ``superseded``."""
    latest: dict[tuple, TaskStatus] = {}
    for t in tasks:  # in submission order
        if t.job_dir is not None:
            latest[(t.job_dir, t.shard, t.shards)] = t
    for t in tasks:
        last = latest.get((t.job_dir, t.shard, t.shards)) if t.job_dir is not None else None
        if last is not None and last is not t and t.state in ("failed", "unknown"):
            t.state, t.error = "superseded", f"{t.error or 'failed'}; rerun as task {last.task_id} ({last.state})"


def _not_started(sweep_dir: Path, seen: set[tuple[str, int, int]]) -> list[TaskStatus]:
    """Shards of the sweep plans that no task accounts for and that left no file."""
    sweep_dir = sweep_dir.resolve()  # "x/hydra/.." or a symlink: the folder it names
    root, sweep_id = (sweep_dir.parent.parent, sweep_dir.name) if sweep_dir.parent.name == "hydra" else (sweep_dir, None)
    out = []
    varying = _varying([list(ps.overrides) for ps in read_sweep_plans(root, sweep_id)[0]])
    for ps in never_started(root, sweep_id):
        jdir = (root / ps.job_key).resolve()
        if (str(jdir), ps.shard, ps.shards) in seen:
            continue
        out.append(
            TaskStatus(
                state="not_started",
                job_num=ps.job_num,
                overrides=[o for o in ps.overrides if o.partition("=")[0] in varying],
                job_key=ps.job_key,
                shard=ps.shard,
                shards=ps.shards,
                job_dir=str(jdir),
                error=f"listed by {ps.plan_file} but never started (no file written): rerun the sweep",
            )
        )
    return out


def _log_error(task: _Task) -> str | None:
    try:
        return last_error_line(task.file("_0_log.err").read_text(errors="replace")[-20000:])
    except OSError:
        return None


def _disk_only_shards(sweep_dir: Path, seen: set[tuple[str, int, int]]) -> list[TaskStatus]:
    """Shards with a plan or a manifest that no submitit task accounts for (local runs)."""
    out = []
    found: dict[tuple[str, int, int], ShardFiles] = {}
    for jdir in sorted({f.parent.resolve() for f in sweep_dir.rglob("shard-*.json")}):
        for suffix in (PLAN, MANIFEST):
            for sid in shard_files_in(jdir, suffix):
                found.setdefault((str(jdir), sid.shard, sid.shards), ShardFiles(jdir, sid))
    for key, files in sorted(found.items()):
        if key in seen:
            continue
        manifest = complete_manifest(files.manifest)
        done = manifest is not None and is_complete(files, manifest.get("config_hash", ""))
        out.append(
            TaskStatus(
                state="done" if done else "incomplete",
                job_key=files.job_dir.name,
                shard=files.id.shard,
                shards=files.id.shards,
                job_dir=key[0],
                plan=files.plan.exists(),
                error=None if done else f"{files.id.stem}: plan without a complete manifest",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sensdir.status", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", help="results/<run.name>, or one Hydra sweep dir under its hydra/")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    a = p.parse_args(argv)
    try:
        status = sweep_status(a.sweep_dir)
    except FileNotFoundError as e:
        print(f"sensdir.status: error: {e}", file=sys.stderr)
        return 2
    try:
        print(dumps_json(status.to_dict()) if a.json else status.render(), flush=True)
    except BrokenPipeError:  # python -m sensdir.status DIR | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status.exit_code


if __name__ == "__main__":
    sys.exit(main())
