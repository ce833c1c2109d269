"""README "Running on SLURM", "Trying it locally", tested as written: the fenced block after the
``readme-slurm-local`` marker runs verbatim in bash (start the local cluster, a tiny sweep with
launch/sweep.sh, wait, status, the reduce's outputs, stop) from a folder laid out like the
repository root (its ``launch/`` scripts and ``.venv``), so that ``results/`` is a temporary one;
the cluster's folder is a temporary one too, through ``SENSDIR_SLURM_DIR``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sensdir.slurm_local import DIR_ENV, TRIAL_SWEEP, LocalCluster, why_unavailable
from slurm_cluster import REPO, _unavailable

MARKER = "<!-- readme-slurm-local"


def readme_block() -> str:
    """The bash block that follows the marker in README.md, as written there."""
    text = (REPO / "README.md").read_text()
    assert MARKER in text, "README.md lost the readme-slurm-local marker of its local-cluster block"
    block = re.match(r"[^\n]*\n```bash\n(.*?)\n```", text[text.index(MARKER) :], re.S)
    assert block, "the readme-slurm-local marker must sit right above a ```bash block"
    return block.group(1)


def test_readme_block_is_self_contained_and_runs_the_sweep_start_suggests():
    lines = [line.split("#")[0].strip() for line in readme_block().splitlines()]
    assert lines[0] == 'eval "$(launch/local_slurm.sh start)"'
    assert TRIAL_SWEEP in lines  # what `start` prints is what the README runs
    assert "python -m sensdir.status results/trial" in lines
    assert lines[-1] == "launch/local_slurm.sh stop"


def _env(slurm_dir: Path) -> dict:
    """This environment with the virtual environment active, no cluster named, the cluster's
    folder in a temporary one and W&B off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    venv = REPO / ".venv"
    if (venv / "bin").is_dir():
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    env.update({DIR_ENV: str(slurm_dir), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})
    return env


def _repo_layout(root: Path) -> Path:
    """A folder with the repository's ``launch/`` and ``.venv``: the README's paths resolve."""
    root.mkdir()
    shutil.copytree(REPO / "launch", root / "launch")
    if (REPO / ".venv").is_dir():
        (root / ".venv").symlink_to(REPO / ".venv")
    return root


@pytest.mark.slurm
@pytest.mark.timeout(900)
def test_readme_local_cluster_commands_run_as_written(tmp_path):
    reason = why_unavailable()
    if reason:
        _unavailable(reason)
    root, slurm_dir = _repo_layout(tmp_path / "repo"), tmp_path / "slurm"
    script = "set -euo pipefail\n" + readme_block() + "\n"
    try:
        res = subprocess.run(["bash", "-c", script], cwd=root, env=_env(slurm_dir), capture_output=True, text=True, timeout=720)
    finally:
        stopped = LocalCluster(slurm_dir).stop()  # where the block did not get to its own stop
    out = f"stdout:\n{res.stdout[-4000:]}\nstderr:\n{res.stderr[-4000:]}"
    assert res.returncode == 0, out
    assert not stopped, f"the README's stop left {stopped} running"
    assert re.search(r"^debug\*\s+up .* idle ", res.stderr, re.M), out  # start showed the node
    assert re.search(r"^sweep:  array \d+, 2 task\(s\)", res.stdout, re.M), out
    results = root / "results" / "trial"
    shards = sorted(p.parent.name.split("-")[0] for p in results.glob("*/shard-*.parquet"))
    assert shards == ["random", "real"], out
    assert re.search(r"task\(s\)/shard\(s\): 2 done$", res.stdout, re.M), out  # sensdir.status
    assert "report.html" in res.stdout.split(), out  # ls results/trial/reduce
    assert (results / "reduce" / "report.html").is_file() and (results / "reduce" / "stats.csv").is_file()
    (reduce_log,) = results.glob("reduce-*.log")
    assert "reduce skipped" not in reduce_log.read_text()
    assert re.search(r"^stopped slurmd \(pid \d+\), slurmctld", res.stdout, re.M), out
    assert not list(slurm_dir.glob("*.pid"))
