"""SLURM fan-out: shard expansion, the launcher config and, on a real one-node SLURM cluster
(tests marked ``slurm``; see tests/slurm_cluster.py), a sharded sweep as an array, requeue
after a kill and after a time limit with nothing lost or duplicated, and a failing task that
the status view names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir

from sensdir.config import register_configs
from sensdir.run import expand_shards
from sensdir.status import squeue_states, sweep_status
from slurm_cluster import (
    LOCAL_LAUNCHER,
    REPO,
    completeness,
    report,
    squeue,
    sweep_command,
    sweep_env,
    task_dirs,
    tiny_overrides,
    wait_for,
)

CONF = str(REPO / "sensdir" / "conf")


# -- no cluster needed -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-m", "direction=a,b", "run.shards=4"], ["-m", "direction=a,b", "run.shards=4", "run.shard=range(0,4)"]),
        (["--multirun", "run.shards=2", "x=1"], ["--multirun", "run.shards=2", "run.shard=range(0,2)", "x=1"]),
        (["-m", "run.shards=4", "run.shard=1"], ["-m", "run.shards=4", "run.shard=1"]),  # explicit shard wins
        (["-m", "run.shards=1"], ["-m", "run.shards=1"]),
        (["run.shards=4"], ["run.shards=4"]),  # a single run computes the one shard it is given
        (["-m", "direction=a,b"], ["-m", "direction=a,b"]),
    ],
)
def test_multirun_with_shards_sweeps_every_shard(argv, expected):
    assert expand_shards(argv) == expected


def test_swept_shard_count_needs_explicit_shards():
    with pytest.raises(SystemExit, match="give run.shard too"):
        expand_shards(["-m", "run.shards=2,4"])


def test_slurm_launcher_config_is_complete_and_overridable():
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=a100", "hydra.launcher.gres=gpu:2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "a100" and launcher.gres == "gpu:2"
    for key in ("timeout_min", "mem_gb", "cpus_per_task", "array_parallelism", "setup", "signal_delay_s"):
        assert launcher[key] is not None, key
    assert launcher.max_num_timeout > 0  # requeue after a time limit is on: jobs resume safely
    assert any("OMP_NUM_THREADS" in line for line in launcher.setup)
    with initialize_config_dir(config_dir=CONF, version_base=None):
        local = compose("config", return_hydra_config=True).hydra.launcher
    assert local._target_.endswith("BasicLauncher")  # the default stays the sequential local one


def test_local_cluster_says_why_it_cannot_start(monkeypatch):
    import sensdir.slurm_local as slurm_local

    monkeypatch.setattr(slurm_local.os, "geteuid", lambda: 1000)
    assert "not root" in slurm_local.why_unavailable()
    monkeypatch.setattr(slurm_local.os, "geteuid", lambda: 0)
    monkeypatch.setattr(slurm_local.shutil, "which", lambda name: None)
    monkeypatch.setattr(slurm_local.Path, "exists", lambda self: False)
    assert "apt-get install slurm-wlm munge" in slurm_local.why_unavailable()


@pytest.mark.slow
def test_local_multirun_expands_shards_into_jobs(tiny_model_dir, tiny_sae_dir, tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(
        sweep_command("direction=real,random", "run.shards=2", *tiny_overrides(tiny_model_dir, tiny_sae_dir, out, "local")),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    shards = sorted(p.relative_to(out / "local") for p in out.glob("local/*/shard-*.parquet"))
    assert [(p.parent.name.split("-")[0], p.name) for p in shards] == [
        (d, f"shard-0000{i}-of-00002.parquet") for d in ("random", "real") for i in (0, 1)
    ]
    status = sweep_status(out / "local", squeue=None)
    assert status.counts() == {"done": 4} and status.exit_code == 0


# -- on the local SLURM cluster ----------------------------------------------------------------
def _log_text(task_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(task_dir.glob("*_log.*")))


def _pid_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slurm
@pytest.mark.timeout(420)
def test_sharded_sweep_runs_as_an_array_and_every_row_is_there_once(
    slurm_cluster, tiny_model_dir, tiny_sae_dir, tmp_path, monkeypatch
):
    """launch/sweep.sh, as a cluster user runs it: the array, then the reduce as a dependent job."""
    out = tmp_path / "out"
    env = sweep_env(slurm_cluster, OUT_DIR=str(out), PYTHON=sys.executable, REDUCE_ARGS="--wandb disabled --bootstrap 10")
    t0 = time.monotonic()
    res = subprocess.run(
        [
            str(REPO / "launch" / "sweep.sh"),
            "sweep",
            *LOCAL_LAUNCHER[1:],
            "hydra.launcher.timeout_min=5",
            "direction=real,random,synth_struct",
            "run.shards=2",
            *tiny_overrides(tiny_model_dir, tiny_sae_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    reduce_job = re.search(r"^reduce: job (\d+) after afterany:(\d+)", res.stdout, re.M)
    assert reduce_job, res.stdout
    results = out / "sweep"
    (sweep_dir,) = [p.parent for p in results.glob("hydra/*/driver.log")]
    driver_pid = int((sweep_dir / "driver.pid").read_text())
    (tmp_path / "link").symlink_to(out)
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.chdir(tmp_path)  # the status of "out/sweep", "link/sweep" and the absolute path agree
    spellings = [results, Path("out/sweep"), Path("link/sweep"), Path("link/sweep/hydra/..")]
    for _ in range(5):
        # one snapshot of SLURM for all spellings; the files may still change between the four
        # reads (a task ends), so a disagreement is retried: a spelling that counted wrong would
        # disagree every time (and the task count below would be off)
        live = squeue_states(t.name for t in task_dirs(results))
        mid = [sweep_status(p, squeue=live) for p in spellings]
        assert all(len(m.tasks) == 6 for m in mid), [m.render() for m in mid]
        if len({tuple(sorted(m.counts().items())) for m in mid}) == 1:
            break
    assert len({tuple(sorted(m.counts().items())) for m in mid}) == 1, [m.counts() for m in mid]
    assert mid[0].exit_code in (0, 3)
    wait_for(
        lambda: not _pid_running(driver_pid) and reduce_job.group(1) not in squeue(slurm_cluster),
        360,
        "the sweep and its dependent reduce to end",
        every=2,
    )
    wall = time.monotonic() - t0
    assert "Error" not in (sweep_dir / "driver.log").read_text()

    tasks = task_dirs(results)
    assert len(tasks) == 6 and {t.name.split("_")[0] for t in tasks} == {reduce_job.group(2)}  # one array of 6 tasks
    fig = completeness(results)
    assert fig.problems == [] and fig.shards == 6
    assert fig.planned == fig.present == 3 * 6 and fig.lost == 0 and fig.duplicated == 0
    # row ids carry the shard; each shard file holds only its own
    for p in results.glob("*/shard-*.parquet"):
        shard = int(p.name.split("-")[1])
        assert all(f"/s{shard}/" in r for r in pq.read_table(p, columns=["row_id"]).column("row_id").to_pylist())
    for p in spellings:
        status = sweep_status(p)
        assert status.counts() == {"done": 6} and status.exit_code == 0
    cli = subprocess.run([sys.executable, "-m", "sensdir.status", "out/sweep"], env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and "6 task(s)/shard(s): 6 done" in cli.stdout, cli.stdout + cli.stderr
    # the dependent reduce job ran after the array: the status gate passed, every planned row once
    reduce_log = (results / f"reduce-{reduce_job.group(1)}.log").read_text()
    assert "6 task(s)/shard(s): 6 done" in reduce_log
    assert f"sensdir.reduce: {fig.planned} rows" in reduce_log and "partial data" not in reduce_log
    report("sweep", f"{fig.line()} reduce_job={reduce_job.group(1)} (afterany:{reduce_job.group(2)}) wall_s={wall:.0f}")


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_killed_and_timed_out_tasks_are_requeued_and_nothing_is_lost_or_duplicated(
    slurm_cluster, fault_plugin_path, tiny_model_dir, tiny_sae_dir, tmp_path
):
    out = tmp_path / "out"
    results = out / "faults"
    # slow_real (tests/slurm_faults.py) sleeps 300 s after writing its plan, on a first attempt
    # only. Of its two tasks, one is killed and requeued by hand (scontrol requeue) and the
    # other gets its time limit cut to 2 minutes while it runs: SLURM sends SIGUSR2
    # signal_delay_s before the limit (up to 60 s earlier: it checks limits every 30 s), and
    # submitit checkpoints and requeues it. The array's own limit (5 min) keeps SLURM's warning
    # signal away from the other tasks.
    env = sweep_env(slurm_cluster, fault_plugin_path, SLURM_FAULTS_SLEEP_S="300")
    args = [
        *LOCAL_LAUNCHER,
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.signal_delay_s=30",
        "hydra.launcher.max_num_timeout=2",
        "direction=real,random,slow_real",
        "run.shards=2",
        *tiny_overrides(tiny_model_dir, tiny_sae_dir, out, "faults"),
    ]
    log = (tmp_path / "driver.log").open("w")
    t0, array = time.monotonic(), None
    driver = subprocess.Popen(sweep_command(*args), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        tasks = wait_for(lambda: len(task_dirs(results)) == 6 and task_dirs(results), 120, "the array's 6 tasks")
        array = tasks[0].name.split("_")[0]
        # Hydra orders jobs direction-major: tasks 4 and 5 are slow_real shards 0 and 1
        timed_out, killed = f"{array}_4", f"{array}_5"

        def computing(task, shard):
            plan = next(iter(results.glob(f"slow_real-*/shard-0000{shard}-of-00002.plan.json")), None)
            return squeue(slurm_cluster).get(task) == "RUNNING" and plan

        plans = {}
        for task, shard in ((killed, 1), (timed_out, 0)):
            plans[task] = wait_for(lambda: computing(task, shard), 240, f"{task} to compute")  # noqa: B023 - waited for here
            assert not plans[task].with_name(plans[task].name.replace(".plan.json", ".manifest.json")).exists()
        slurm_cluster.run("scontrol", "requeue", killed)  # kill mid-run: planned, nothing written
        slurm_cluster.run("scontrol", "update", f"JobId={timed_out}", "TimeLimit=2")
        fault_time = datetime.now().astimezone()
        rc = driver.wait(timeout=420)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        log.close()
        if array is not None:
            slurm_cluster.run("scancel", array, check=False)  # nothing left running if the test failed
    wall = time.monotonic() - t0
    driver_log = (tmp_path / "driver.log").read_text()
    assert rc == 0, driver_log[-4000:]

    task_of = {t.name: t for t in task_dirs(results)}
    killed_log, timeout_log = _log_text(task_of[killed]), _log_text(task_of[timed_out])
    assert "DUE TO JOB REQUEUE" in killed_log
    assert "this job is timed-out" in timeout_log and f"Requeued job {timed_out}" in timeout_log
    for text in (killed_log, timeout_log):
        assert text.count("slow_real: sleeping") == 1  # the first attempt slept; the requeued one ran
        assert "Job completed successfully" in text
    for plan in plans.values():  # both shards were written by their requeued attempts
        manifest = json.loads(plan.with_name(plan.name.replace(".plan.json", ".manifest.json")).read_text())
        assert datetime.fromisoformat(manifest["finished_at"]) > fault_time

    fig = completeness(results)
    assert fig.problems == [], fig.problems
    assert fig.planned == fig.present == 18 and fig.lost == 0 and fig.duplicated == 0
    status = sweep_status(results)
    assert status.counts() == {"done": 6}
    report(
        "faults",
        f"{fig.line()} kills=1 (scontrol requeue {killed}) time_limits=1 ({timed_out}, submitit requeue) "
        f"requeues=2 wall_s={wall:.0f}",
    )


@pytest.mark.slurm
@pytest.mark.timeout(420)
def test_cancelled_task_is_resubmitted_by_rerunning_the_sweep(
    slurm_cluster, fault_plugin_path, tiny_model_dir, tiny_sae_dir, tmp_path, monkeypatch
):
    """scancel ends a task for good (no requeue); rerunning the same command resubmits the
    sweep: the finished shard is skipped, the cancelled one is computed, no row twice."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))  # the status view asks squeue
    out = tmp_path / "out"
    results = out / "resubmit"
    args = [
        *LOCAL_LAUNCHER,
        "hydra.launcher.timeout_min=5",
        "direction=real,slow_real",
        *tiny_overrides(tiny_model_dir, tiny_sae_dir, out, "resubmit"),
    ]
    log = (tmp_path / "driver1.log").open("w")
    driver = subprocess.Popen(
        sweep_command(*args),
        env=sweep_env(slurm_cluster, fault_plugin_path, SLURM_FAULTS_SLEEP_S="300"),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    array = None
    try:
        tasks = wait_for(lambda: len(task_dirs(results)) == 2 and task_dirs(results), 120, "the array's 2 tasks")
        array = tasks[0].name.split("_")[0]
        real_manifest = wait_for(lambda: next(iter(results.glob("real-*/shard-*.manifest.json")), None), 240, "real's shard")
        wait_for(
            lambda: squeue(slurm_cluster).get(f"{array}_1") == "RUNNING" and any(results.glob("slow_real-*/*.plan.json")),
            240,
            "slow_real to compute",
        )
        slurm_cluster.run("scancel", f"{array}_1")
        wait_for(lambda: f"{array}_1" not in squeue(slurm_cluster), 60, "the cancel")
        cancelled = sweep_status(results)
        assert [t.state for t in cancelled.tasks] == ["done", "failed"]  # killed, no result: failed, log named
        assert cancelled.tasks[1].log_err.endswith(f"{array}_1_0_log.err")
        # no accounting (sacct) here: the driver sees the cancelled task end through squeue, and ends
        assert driver.wait(timeout=60) != 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        log.close()
    mtime = real_manifest.stat().st_mtime_ns
    res = subprocess.run(
        sweep_command(*args),
        env=sweep_env(slurm_cluster, fault_plugin_path, SLURM_FAULTS_SLEEP_S="0"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert real_manifest.stat().st_mtime_ns == mtime  # the finished shard was skipped, not redone
    second = [t for t in task_dirs(results) if t.name.split("_")[0] != array]
    assert len(second) == 2 and "skip: " in _log_text(second[0])
    fig = completeness(results)
    assert fig.problems == [] and fig.planned == fig.present == 12 and fig.lost == 0 and fig.duplicated == 0
    assert sweep_status(results).counts() == {"done": 4}  # the cancelled task's shard is done by the rerun
    report("resubmit", f"{fig.line()} cancelled=1 (scancel {array}_1) resubmissions=1 skipped=1")


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_task_with_invalid_config_fails_fast_and_status_names_it(slurm_cluster, tiny_model_dir, tiny_sae_dir, tmp_path):
    out = tmp_path / "out"
    results = out / "bad"
    res = subprocess.run(
        sweep_command(
            *LOCAL_LAUNCHER,
            "hydra.launcher.timeout_min=5",
            "site.hook=blocks.1.hook_resid_pre,blocks.9.hook_resid_pre",
            *tiny_overrides(tiny_model_dir, tiny_sae_dir, out, "bad"),
        ),
        env=sweep_env(slurm_cluster),
        capture_output=True,
        text=True,
        timeout=280,
        cwd=REPO,
    )
    assert res.returncode != 0  # the driver reports the failed task
    assert "layer 9 is outside" in res.stdout + res.stderr

    status = sweep_status(results)
    assert status.counts() == {"done": 1, "failed": 1} and status.exit_code == 1
    (bad,) = status.by_state("failed")
    assert bad.overrides == ["site.hook=blocks.9.hook_resid_pre"]
    assert "layer 9 is outside the model's layers 0..1" in bad.error
    err_log = Path(bad.log_err).read_text()
    assert "sensdir: error: site hook 'blocks.9.hook_resid_pre': layer 9 is outside" in err_log
    assert not bad.plan  # it failed before compute: no plan, no shard
    # fast: the task's own log spans a few seconds, not a computation
    stamps = [
        datetime.strptime(m, "%Y-%m-%d %H:%M:%S,%f")
        for m in re.findall(r"submitit \w+ \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\)", _log_text(Path(bad.log_err).parent))
    ]
    task_s = (max(stamps) - min(stamps)).total_seconds()
    assert task_s < 60

    cli = subprocess.run(
        [sys.executable, "-m", "sensdir.status", str(results)],
        env=sweep_env(slurm_cluster),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert cli.returncode == 1
    assert "failed" in cli.stdout and bad.log_err in cli.stdout and "layer 9 is outside" in cli.stdout
    # a reduce run by hand refuses the sweep: one config failed before writing its plan
    red = [sys.executable, "-m", "sensdir.reduce", str(results), "--no-progress", "--wandb", "disabled", "--bootstrap", "10"]
    refused = subprocess.run(red, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "failed before planning" in refused.stderr and "site.hook=blocks.9.hook_resid_pre" in refused.stderr
    partial = subprocess.run([*red, "--allow-partial"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert partial.returncode == 0, partial.stderr
    page = Path(re.search(r"report:\s+(\S+)", partial.stdout).group(1)).read_text()
    assert "blocks.9.hook_resid_pre" in page
    report("invalid", f"tasks=2 done=1 failed=1 failed_task={bad.task_id} task_s={task_s:.1f} log={bad.log_err}")
