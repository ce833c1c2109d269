"""The status view's reading of SLURM tasks, without a cluster: the error line of a killed task,
SLURM's pending reason, reruns of a failed task, and ``| head``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sensdir.slurm_queue import last_error_line
from sensdir.status import SweepStatus, TaskStatus, _supersede

REPO = Path(__file__).resolve().parent.parent


def test_error_line_skips_progress_bar_debris():
    log = (
        "walks:  40%|████      | 4/10 [00:01<00:02,  2.9it/s]\r"
        "walks:  88%|████████▊ | 8.8/10 [00:03<00:00,  2.9it/s]srun: error: host: task 0: Killed\n"
        "slurmstepd: error: *** JOB 70 ON host CANCELLED AT 2026-01-01T00:00:00 ***\n"
        "walks:  90%|█████████ | 9/10 [00:03<00:00,  2.9it/s]"
    )
    line = last_error_line(log)
    assert line is not None and "CANCELLED" in line and "%|" not in line
    assert last_error_line("x\nTraceback...\nValueError: bad\n 12%|█ | 1/8 [00:00<00:01]") == "ValueError: bad"
    assert last_error_line("sensdir: error: site hook 'x': layer 9 is outside\nValueError: y") == (
        "sensdir: error: site hook 'x': layer 9 is outside"
    )
    assert last_error_line(" 88%|████ | 8/9 [00:01<00:00]srun: error: n1: task 0: Killed") == "srun: error: n1: task 0: Killed"


def test_failed_task_rerun_by_a_later_task_is_superseded_and_not_a_failure():
    shard = {"job_dir": "/r/real-abc", "shard": 1, "shards": 2}
    old = TaskStatus("failed", "70_1", error="no result", **shard)
    new = TaskStatus("running", "75_1", slurm_state="RUNNING", **shard)
    other = TaskStatus("done", "70_0", job_dir="/r/real-abc", shard=0, shards=2)
    tasks = [other, old, new]
    _supersede(tasks)
    assert [t.state for t in tasks] == ["done", "superseded", "running"]
    assert "rerun as task 75_1" in (old.error or "")
    status = SweepStatus(Path("/r"), tasks, squeue_ok=True)
    assert status.exit_code == 3  # still running, nothing failed


def test_pending_reason_and_never_started_are_shown():
    t = TaskStatus("pending", "69", slurm_state="PENDING", slurm_reason="PartitionConfig")
    gone = TaskStatus("failed", "68_0", error="never started (no log): cancelled or lost before it ran")
    text = SweepStatus(Path("/r"), [t, gone], squeue_ok=True).render()
    assert "[SLURM PENDING: PartitionConfig]" in text and "cannot start: SLURM says PartitionConfig" in text
    assert "log:   none (the task never started)" in text


def test_status_piped_into_a_closed_pipe_is_quiet(tmp_path):
    res = subprocess.run(
        f"{sys.executable} -m sensdir.status {tmp_path} | true",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert "BrokenPipeError" not in res.stderr and "Traceback" not in res.stderr, res.stderr
