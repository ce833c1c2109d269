"""Faults seen from the command line (subprocesses on the tiny model): one ``sensdir: error:``
line for bad input, interrupted multiruns whose unstarted jobs are named, two identical runs
at once, and no credential in any file under the results folder (docs/reliability.md)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import tiny_overrides

SECRET = "hf_secretvalue0123456789abcdefABCDEF"
WB_SECRET = "fakewandbkey0123456789abcdef0123456789abcd"


def _args(model_dir: Path, sae_dir: Path, out: Path, *extra: str) -> list[str]:
    """The command; a ``-m`` in ``extra`` goes first (Hydra takes the overrides as one run)."""
    flags = [e for e in extra if e == "-m"]
    extra = tuple(e for e in extra if e != "-m")
    return [
        sys.executable,
        "-m",
        "sensdir.run",
        *flags,
        *tiny_overrides(model_dir, sae_dir, out, "sweep"),
        *extra,
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_TOKEN"))}
    return {**env, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **extra}


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=_env(**env), preexec_fn=lambda: os.umask(0o022))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _bad_header(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")
    p.write_bytes(bytes(data))


# case -> (file of the model copy to damage and how, extra overrides, what the error line names)
CASES = {
    "truncated model.safetensors": ("model.safetensors", _truncate, [], "model.safetensors"),
    "corrupt safetensors header": ("model.safetensors", _bad_header, [], "model.safetensors"),
    "broken config.json": ("config.json", lambda p: p.write_text("{"), [], "config.json"),
    "run.device=cuda without CUDA": (None, None, ["run.device=cuda"], "CUDA is not available"),
    "unknown key +data.n_prompt": (None, None, ["+data.n_prompt=20"], "data.n_prompt"),
    "run.name escaping run.out_dir": (None, None, ["run.name=../../x"], "run.name='../../x'"),
    "secret as a Hydra override": (None, None, [f"+hydra.job.env_set.WANDB_API_KEY={WB_SECRET}"], "WANDB_API_KEY"),
    "unwritable output folder": (None, None, [], "cannot write results to /sys/sensdir-test-out"),
}
UNWRITABLE = Path("/sys/sensdir-test-out")  # sysfs: not even root may make a folder there


def _unwritable() -> bool:
    try:
        UNWRITABLE.mkdir()
    except OSError:
        return True
    UNWRITABLE.rmdir()
    return False


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_fault_is_one_error_line_and_no_partial_file(tiny_model_dir, tiny_sae_dir, tmp_path, case):
    name, damage, extra, named = CASES[case]
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    if damage is not None:
        damage(model / name)
    out = tmp_path / "a" / "b" / "out"
    if case == "unwritable output folder":
        if not _unwritable():
            pytest.skip(f"{UNWRITABLE} is writable here")
        out = UNWRITABLE
    res = _run(_args(model, tiny_sae_dir, out, *extra), CUDA_VISIBLE_DEVICES="")
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("sensdir: error:")]
    assert res.returncode == 2 and len(errors) == 1, res.stderr[-3000:]
    assert named in errors[0] and "Traceback" not in res.stderr
    if name is not None:
        assert str(model / name) in errors[0]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(model)]
    assert not [p for p in written if p.suffix in (".parquet", ".tmp")]
    assert not [p for p in written if WB_SECRET.encode() in p.read_bytes()]
    assert not (tmp_path / "x").exists()  # nothing escaped run.out_dir


def _planned(out: Path) -> list[Path]:
    return sorted((out / "sweep" / "plans").glob("*.json"))


@pytest.mark.slow
def test_interrupted_multirun_names_the_jobs_that_never_started(tiny_model_dir, tiny_sae_dir, tmp_path):
    from sensdir.reduce.__main__ import main as reduce_main
    from sensdir.status import sweep_status

    out = tmp_path / "out"
    args = _args(tiny_model_dir, tiny_sae_dir, out, "-m", "direction=real,random", "run.shards=2")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        while not list(out.glob("sweep/*/*.manifest.json")) and proc.poll() is None:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert len(_planned(out)) == 1  # written before any job started
    status = sweep_status(out / "sweep", squeue=None)
    never = status.by_state("not_started")
    assert never and status.exit_code == 1
    # the jobs after the one that was running when the signal came (here at least both random
    # shards) are named, with their overrides
    assert {("random", 0), ("random", 1)} <= {(t.job_key.split("-")[0], t.shard) for t in never}, status.render()
    assert "direction=random run.shard=0" in status.render()
    assert reduce_main([str(out / "sweep"), "--wandb", "disabled", "--no-progress"]) == 3
    assert reduce_main([str(out / "sweep"), "--wandb", "disabled", "--no-progress", "--allow-partial", "--bootstrap", "10"]) == 0
    page = (out / "sweep" / "reduce" / "report.html").read_text()
    assert "never started" in page and "direction=random" in page
    # the same command again completes the sweep: every planned shard exactly once
    res = _run(args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sweep_status(out / "sweep", squeue=None).exit_code == 0


@pytest.mark.slow
def test_two_identical_runs_started_together_compute_once_with_own_logs(tiny_model_dir, tiny_sae_dir, tmp_path):
    out = tmp_path / "out"
    args = _args(tiny_model_dir, tiny_sae_dir, out)
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    logs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    text = "".join(o + e for o, e in logs)
    assert text.count("wrote ") == 1 and text.count("skip: ") == 1, text[-3000:]
    assert len(list((out / "sweep" / "hydra").iterdir())) == 2  # a log folder each


@pytest.mark.slow
def test_no_credential_reaches_any_file_under_the_results(tiny_model_dir, tiny_sae_dir, tmp_path):
    import socket

    from sensdir.reduce.__main__ import main as reduce_main

    out = tmp_path / "out"
    env = {"WANDB_API_KEY": WB_SECRET, "HF_TOKEN": SECRET}
    res = _run(_args(tiny_model_dir, tiny_sae_dir, out, "-m", "direction=real,random"), **env)
    assert res.returncode == 0, res.stderr[-2000:]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)  # a W&B server that never answers: auto logs offline
    old = dict(os.environ)
    os.environ.update(
        env, WANDB_BASE_URL=f"http://127.0.0.1:{s.getsockname()[1]}", SENSDIR_WANDB_TIMEOUT="0.5", WANDB_SILENT="true"
    )
    try:
        assert reduce_main([str(out / "sweep"), "--no-progress", "--bootstrap", "10"]) == 0
    finally:
        os.environ.clear()
        os.environ.update(old)
        s.close()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "multirun.yaml" for p in files)
    leaked = [p for p in files for v in (WB_SECRET, SECRET) if v.encode() in p.read_bytes()]
    assert leaked == []
    shards = [p for p in files if p.parent.name != "reduce" and "hydra" not in p.parts and "wandb" not in p.parts]
    assert shards and all(p.stat().st_mode & 0o777 == 0o644 for p in shards)
