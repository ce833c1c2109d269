"""Every embedded experiment preset runs its whole sweep here (sizes shrunk) and writes one
complete shard per swept job; the reduce then finds every planned row."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sensdir.reduce import reduce_sweep

CONF = Path(__file__).resolve().parent.parent / "sensdir" / "conf" / "experiment"
EMBEDDED = sorted(p.stem for p in CONF.glob("*.yaml") if "override /model" not in p.read_text() and p.stem != "quickstart")
SMALL = ["data.n_prompts=6", "data.n_stats=120", "data.n_pool=30", "run.progress=false"]
STUDY_SMALL = {
    "absorption": ["study.max_words=300"],
    "ioi_supervised": ["study.n_prompts=400"],
    "gated_shrinkage": ["study.n_prompts=8"],
}


def _n_jobs(name: str) -> int:
    params = (yaml.safe_load((CONF / f"{name}.yaml").read_text()).get("hydra") or {}).get("sweeper", {}).get("params", {})
    n = 1
    for values in params.values():
        n *= len(str(values).split(","))
    return n


@pytest.mark.slow
@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_preset_runs_its_sweep(name, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "sensdir.run",
        "-m",
        f"experiment={name}",
        f"run.out_dir={tmp_path}",
        *SMALL,
        *STUDY_SMALL.get(name, []),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = tmp_path / name
    shards = sorted(sweep.glob("*/shard-*.parquet"))
    assert len(shards) == _n_jobs(name), [p.parent.name for p in shards]
    out = reduce_sweep(sweep, tmp_path / "reduce", wandb="disabled", n_bootstrap=20, progress=False)
    assert out.completeness.ok and out.completeness.n_present == out.completeness.n_planned > 0
    assert out.html.exists() and out.figures
