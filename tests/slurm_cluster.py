"""Fixtures for the tests marked ``slurm``: a real one-node SLURM cluster (slurmctld, slurmd,
munged) started for the test session by ``sensdir.slurm_local`` and stopped by pid at its end,
and helpers to run sweeps on it.

Where the cluster cannot be started (not root, ``slurm-wlm``/``munge`` not installed) the
tests are skipped with the reason, unless ``SENSDIR_REQUIRE_SLURM=1`` (set by ``.ci/run``),
in which case they fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import tiny_overrides  # noqa: F401 - re-exported for the SLURM tests
from sensdir.slurm_local import ClusterUnavailable, LocalCluster, why_unavailable

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _unavailable(reason: str):
    if os.environ.get("SENSDIR_REQUIRE_SLURM") == "1":
        pytest.fail(f"SENSDIR_REQUIRE_SLURM=1 but a local SLURM cluster cannot be started: {reason}")
    pytest.skip(f"local SLURM cluster unavailable: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    reason = why_unavailable()
    if reason:
        _unavailable(reason)
    cluster = LocalCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (ClusterUnavailable, OSError, subprocess.SubprocessError) as e:
        cluster.stop()
        _unavailable(str(e))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def fault_plugin_path(tmp_path_factory) -> str:
    """PYTHONPATH entries that register the test-only ``slow_real`` direction (tests/slurm_faults.py)."""
    from slurm_faults import write_plugin_dist

    d = write_plugin_dist(tmp_path_factory.mktemp("plugins"))
    return os.pathsep.join([str(d), str(TESTS)])


# hydra/launcher=slurm with the resources of this one-node CPU cluster
LOCAL_LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gres=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
]


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sensdir.run", "-m", *args]


def sweep_env(cluster: LocalCluster, pythonpath: str | None = None, **extra: str) -> dict:
    env = cluster.env()
    env["OMP_NUM_THREADS"] = "1"
    env["HYDRA_FULL_ERROR"] = "1"
    env.pop("SLURM_JOB_ID", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def hydra_sweep_dirs(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.glob("hydra/*/.submitit"))


def task_dirs(results: Path) -> list[Path]:
    return sorted(d for s in results.glob("hydra/*/.submitit") for d in s.iterdir() if d.is_dir() and "_" in d.name)


@dataclass
class Figures:
    """What the completeness check of a sweep directory finds."""

    tasks: int
    shards: int
    planned: int
    present: int
    lost: int
    duplicated: int
    problems: list[str]

    def line(self) -> str:
        return (
            f"tasks={self.tasks} shards={self.shards} planned_rows={self.planned} present_rows={self.present} "
            f"lost={self.lost} duplicated={self.duplicated}"
        )


def completeness(results: Path) -> Figures:
    """Planned rows (plan files) against present rows (Parquet ``row_id``), through the reduce's
    completeness check where it exists, else directly."""
    n_tasks = len(task_dirs(results))
    try:
        from sensdir.reduce.completeness import check_completeness
    except ImportError:
        check_completeness = None
    if check_completeness is not None:
        c = check_completeness(results, progress=False)
        return Figures(n_tasks, len(c.shards), c.n_planned, c.n_present, c.n_missing_rows, c.n_duplicated_rows, c.problems())
    planned, present = set(), []
    for plan in results.glob("*/shard-*.plan.json"):
        planned.update(json.loads(plan.read_text())["row_ids"])
    shards = sorted(results.glob("*/shard-*.parquet"))
    for p in shards:
        present += pq.read_table(p, columns=["row_id"]).column("row_id").to_pylist()
    dup = len(present) - len(set(present))
    lost = len(planned - set(present))
    return Figures(n_tasks, len(shards), len(planned), len(set(present)), lost, dup, [])


def wait_for(pred, timeout: float, what: str, every: float = 1.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def squeue(cluster: LocalCluster) -> dict[str, str]:
    out = cluster.run("squeue", "-h", "-r", "-o", "%i|%T", check=False).stdout
    return dict(line.split("|", 1) for line in out.split() if "|" in line)


def report(name: str, text: str) -> None:
    """Print a measured figure and keep it in a file (SENSDIR_SLURM_FIGURES) for the closing note."""
    print(f"[{name}] {text}")
    path = os.environ.get("SENSDIR_SLURM_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(f"[{name}] {text}\n")
