"""The installable package: the wheel carries the configs, installs console scripts that run a
job and a reduce from any directory, completes on the shell, and declares every distribution
sensdir imports.

The wheel test installs the built wheel into a new virtual environment outside the checkout.
Its dependencies come from this environment's site-packages (a ``.pth`` line), so the test
needs no network and no second torch; sensdir itself must come from the wheel, which the test
checks."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("sensdir-run", "sensdir-reduce", "sensdir-status", "sensdir-bench", "sensdir-prefetch")


def _requirement_name(req: str) -> str:
    for sep in "<>=!~[; ":
        req = req.split(sep, 1)[0]
    return req.strip().lower().replace("_", "-")


def test_every_imported_distribution_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    stdlib = set(sys.stdlib_module_names)
    mods = set()
    for path in (ROOT / "sensdir").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    dists = packages_distributions()
    missing = {}
    for mod in sorted(mods - stdlib - {"sensdir", "__future__"}):
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
        if not names & declared:
            missing[mod] = sorted(names)
    assert not missing, f"imported but not in [project].dependencies: {missing}"


def test_console_scripts_are_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(SCRIPTS) <= set(scripts)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A virtual environment outside the checkout with the wheel of this checkout installed."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"  # built from a copy: no build/ or egg-info left in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "sensdir", src / "sensdir", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)], check=True, timeout=600
    )
    wheel = next((tmp / "dist").glob("sensdir-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {
        "sensdir/conf/config.yaml",
        "sensdir/conf/experiment/quickstart.yaml",
        "sensdir/conf/hydra/launcher/slurm.yaml",
    } <= names
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(
        subprocess.check_output(
            [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (purelib / "_deps_of_the_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=600,
    )
    return venv


def _run(venv: Path, args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, **kw)


@pytest.mark.slow
def test_wheel_installs_and_runs_a_job_and_a_reduce_from_another_directory(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(installed, ["python", "-c", "import sensdir; print(sensdir.__file__)"], work)
    assert where.returncode == 0 and str(installed) in where.stdout, where.stdout + where.stderr
    for script in SCRIPTS:
        assert (installed / "bin" / script).exists(), script
    small = ["data.n_prompts=4", "data.n_stats=40", "data.n_pool=10", "schedule.n_steps=5", "run.progress=false"]
    res = _run(installed, ["sensdir-run", "-m", "direction=real,random", *small, "run.out_dir=out", "run.name=w"], work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((work / "out" / "w").glob("*/shard-*.parquet"))) == 2
    res = _run(installed, ["sensdir-reduce", "out/w", "--wandb", "disabled", "--bootstrap", "10", "--no-progress"], work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (work / "out" / "w" / "reduce" / "report.html").exists()
    res = _run(installed, ["sensdir-status", "out/w"], work)
    assert res.returncode == 0 and "done" in res.stdout, res.stdout + res.stderr
    res = _run(installed, ["sensdir-prefetch", "-m", "direction=real,random"], work)
    assert res.returncode == 0 and "nothing to fetch for 2 jobs" in res.stdout, res.stdout + res.stderr


@pytest.mark.slow
def test_shell_completion_of_the_console_script(installed, tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = (
        'eval "$(sensdir-run -sc install=bash)"; '
        "COMP_LINE='sensdir-run direction=synth_s'; COMP_POINT=${#COMP_LINE}; "
        "COMP_WORDS=(sensdir-run direction=synth_s); COMP_CWORD=1; "
        'hydra_bash_completion; echo "REPLY: ${COMPREPLY[*]}"; complete -p sensdir-run'
    )
    res = _run(installed, ["bash", "-c", script], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "REPLY: direction=synth_struct" in res.stdout, res.stdout + res.stderr
    assert "hydra_bash_completion sensdir-run" in res.stdout
