"""launch/sweep.sh on the local SLURM cluster as a newcomer meets it: a sweep of one job (a plain
SLURM job, not an array) that cannot start on this node, reported within seconds with SLURM's
reason, its reduce queued all the same; then ``scancel``: the driver ends within a minute on a
cluster without accounting and records its exit status, and the reduce says it was skipped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from sensdir.status import sweep_status
from slurm_cluster import LOCAL_LAUNCHER, REPO, squeue, sweep_env, tiny_overrides, wait_for


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_one_job_sweep_that_cannot_start_is_reported_and_its_driver_ends_after_scancel(
    slurm_cluster, tiny_model_dir, tiny_sae_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    out = tmp_path / "out"
    env = sweep_env(slurm_cluster, OUT_DIR=str(out), PYTHON=sys.executable, REDUCE_ARGS="--wandb disabled")
    too_many = str((os.cpu_count() or 1) + 2)  # more CPUs than the one node has: PartitionConfig
    t0 = time.monotonic()
    res = subprocess.run(
        [
            str(REPO / "launch" / "sweep.sh"),
            "one",
            *LOCAL_LAUNCHER[1:],
            f"hydra.launcher.cpus_per_task={too_many}",
            "direction=real",
            *tiny_overrides(tiny_model_dir, tiny_sae_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    launch_s = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    assert launch_s < 60, launch_s
    sweep = re.search(r"^sweep:  array (\d+), 1 task\(s\)", res.stdout, re.M)
    reduce_job = re.search(r"^reduce: job (\d+) after afterany:(\d+)", res.stdout, re.M)
    assert sweep and reduce_job and reduce_job.group(2) == sweep.group(1), res.stdout
    job = sweep.group(1)
    assert "cannot start" in res.stderr and "PartitionConfig" in res.stderr, res.stderr

    results = out / "one"
    (sweep_dir,) = [p.parent for p in results.glob("hydra/*/driver.log")]
    status = sweep_status(results)
    (task,) = status.tasks
    assert task.task_id == job and task.state == "pending" and task.slurm_reason == "PartitionConfig"
    assert "cannot start: SLURM says PartitionConfig" in status.render()

    slurm_cluster.run("scancel", job)
    t_cancel = time.monotonic()
    driver_pid = int((sweep_dir / "driver.pid").read_text())
    wait_for(lambda: not _alive(driver_pid), 60, "the driver to end after scancel", every=1)
    driver_s = time.monotonic() - t_cancel
    exit_file = sweep_dir / "driver.exit"
    assert exit_file.exists() and int(exit_file.read_text()) != 0, (sweep_dir / "driver.log").read_text()[-3000:]

    (task,) = sweep_status(results).tasks
    assert task.state == "failed" and task.log_err is None and "never started" in (task.error or "")
    wait_for(lambda: reduce_job.group(1) not in squeue(slurm_cluster), 120, "the reduce job to end", every=2)
    reduce_log = (results / f"reduce-{reduce_job.group(1)}.log").read_text()
    assert "reduce skipped" in reduce_log and "never started" in reduce_log, reduce_log
    print(f"[one-job] launch_s={launch_s:.1f} driver_exit_s={driver_s:.1f} exit={exit_file.read_text().strip()}")


def test_local_cluster_start_prints_the_conf_line_and_a_sweep_this_node_can_run(tmp_path):
    from hydra import compose, initialize_config_dir

    from sensdir.config import register_configs
    from sensdir.slurm_local import ready_commands

    export, _, sweep, *_ = ready_commands(tmp_path / "slurm.conf")
    assert export == f"export SLURM_CONF={tmp_path / 'slurm.conf'}"
    assert sweep.startswith("launch/sweep.sh trial ") and "hydra/launcher=slurm_local" in sweep.split()
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "sensdir" / "conf"), version_base=None):
        launcher = compose("config", overrides=["hydra/launcher=slurm_local"], return_hydra_config=True).hydra.launcher
    # the preset is hydra/launcher=slurm with what the local node has: its partition, no GPU, one CPU
    assert launcher._target_.endswith("SlurmLauncher") and launcher.max_num_timeout > 0
    for override in LOCAL_LAUNCHER[1:4]:
        key, value = override.removeprefix("hydra.launcher.").split("=")
        assert str(launcher[key]).replace("None", "null") == value, override
