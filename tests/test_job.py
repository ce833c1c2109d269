"""run_job end to end on the tiny model: shards, manifests, determinism, reruns, bad input."""

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import make_sae, tiny_overrides, with_
from sensdir.config import DirectionConfig
from sensdir.directions.random import RandomConfig
from sensdir.errors import ConfigError, MissingResourceError, SensdirError
from sensdir.job import run_job


def _rows(result):
    return pq.read_table(result.shard_path).to_pylist()


def test_job_writes_a_self_describing_shard(tiny_cfg):
    res = run_job(tiny_cfg)
    rows = _rows(res)
    assert len(rows) == res.n_rows == tiny_cfg.data.n_prompts
    for r in rows:
        assert r["direction"] == "real" and len(r["kl"]) == len(r["l2"]) == len(r["grid"]) == 11
        assert r["kl"][0] == 0.0 and r["l2"][0] == 0.0
        assert r["kl"][-1] > r["kl"][1] > 0  # the walk to another prompt's activation moves the output
        assert 0 <= r["ms_step_kl"] < 11 and 0 <= r["plateau_len"] <= 11
    assert len({r["row_id"] for r in rows}) == len(rows)
    manifest = json.loads(res.manifest_path.read_text())
    assert manifest["status"] == "complete" and manifest["n_rows"] == len(rows)
    assert manifest["seed"] == tiny_cfg.run.seed
    assert manifest["config"]["direction"]["name"] == "real"
    assert {"git_commit", "git_dirty", "versions", "host"} <= set(manifest["provenance"])
    assert manifest["provenance"]["versions"]["torch"] == version("torch")
    meta = json.loads(pq.read_schema(res.shard_path).metadata[b"sensdir"])
    assert meta["config_hash"] == manifest["config_hash"]


def test_same_config_and_seed_give_identical_numbers(tiny_cfg, tmp_path):
    a = _rows(run_job(with_(tiny_cfg, direction=RandomConfig())))
    b_cfg = with_(tiny_cfg, direction=RandomConfig(), run={"out_dir": str(tmp_path / "other")})
    b = _rows(run_job(b_cfg))
    assert [r["kl"] for r in a] == [r["kl"] for r in b]
    assert [r["l2"] for r in a] == [r["l2"] for r in b]
    c = _rows(run_job(with_(b_cfg, run={"seed": 1})))
    assert [r["kl"] for r in a] != [r["kl"] for r in c]


def test_rerun_skips_finished_work(tiny_cfg):
    first = run_job(tiny_cfg)
    mtime = first.shard_path.stat().st_mtime_ns
    second = run_job(tiny_cfg)
    assert second.skipped and second.shard_path == first.shard_path
    assert first.shard_path.stat().st_mtime_ns == mtime
    # a shard whose manifest is missing (killed between the two writes) is redone
    first.manifest_path.unlink()
    third = run_job(tiny_cfg)
    assert not third.skipped and third.manifest_path.exists()


def test_shards_partition_the_prompts(tiny_cfg):
    ids = []
    for shard in range(3):
        res = run_job(with_(tiny_cfg, run={"shards": 3, "shard": shard}))
        ids.append({r["prompt_index"] for r in _rows(res)})
    assert sum(map(len, ids)) == tiny_cfg.data.n_prompts
    assert len(set().union(*ids)) == tiny_cfg.data.n_prompts


def test_n_targets_gives_several_rows_per_prompt(tiny_cfg):
    rows = _rows(run_job(with_(tiny_cfg, run={"n_targets": 3})))
    assert len(rows) == 3 * tiny_cfg.data.n_prompts
    assert sorted({r["target_index"] for r in rows}) == [0, 1, 2]


def _other_sae(tmp_path, d_in, hook):
    d = tmp_path / f"sae_{d_in}_{hook}"
    make_sae(d_in, 64, hook).save_model(d)
    return str(d)


BAD = {
    "unknown direction": (lambda c, t: with_(c, direction=DirectionConfig(name="nope")), ConfigError, "valid choices: "),
    "SAE hook differs from site": (lambda c, t: with_(c, site={"hook": "blocks.0.hook_resid_pre"}), ConfigError, "the SAE reads"),
    "SAE d_in differs from model": (
        lambda c, t: with_(c, sae={"path": _other_sae(t, 16, "blocks.1.hook_resid_pre")}),
        ConfigError,
        "d_in is 16",
    ),
    "layer outside the model": (
        lambda c, t: with_(c, site={"hook": "blocks.7.hook_resid_pre"}),
        ConfigError,
        "outside the model's layers 0..1",
    ),
    "fewer than 2 steps": (lambda c, t: with_(c, schedule=type(c.schedule)(n_steps=1)), ConfigError, "at least 2"),
    "more prompts than the data holds": (lambda c, t: with_(c, data={"n_prompts": 10**6}), ConfigError, "holds only"),
    "missing weights directory": (lambda c, t: with_(c, model={"path": str(t / "nowhere")}), MissingResourceError, "nowhere"),
    "unknown embedded SAE": (
        lambda c, t: with_(c, sae={"source": "embedded", "sae_id": "blocks.1.hook_resid_pre/nope"}),
        ConfigError,
        "valid choices",
    ),
    "unknown model source": (lambda c, t: with_(c, model={"source": "hubb"}), ConfigError, "transformer_lens"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_before_compute_and_writes_nothing(tiny_cfg, tmp_path, case):
    make, exc, message = BAD[case]
    cfg = make(tiny_cfg, tmp_path)
    with pytest.raises(exc) as e:
        run_job(cfg)
    assert isinstance(e.value, SensdirError)
    assert message in str(e.value)
    assert not Path(cfg.run.out_dir).exists()


@pytest.mark.slow
def test_cli_bad_input_is_one_clear_line_and_nonzero_exit(tiny_model_dir, tiny_sae_dir, tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sensdir.run",
            f"model.path={tiny_model_dir}",
            "sae.source=disk",
            f"sae.path={tiny_sae_dir}",
            "site.hook=blocks.9.hook_resid_pre",
            f"run.out_dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 2
    assert "sensdir: error: site hook 'blocks.9.hook_resid_pre': layer 9 is outside" in res.stderr
    assert "Traceback" not in res.stderr
    assert not list(out.rglob("*.parquet"))


@pytest.mark.slow
def test_cli_multirun_writes_one_job_per_direction(tiny_model_dir, tiny_sae_dir, tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sensdir.run",
            "-m",
            "direction=real,random,synth_struct",
            *tiny_overrides(tiny_model_dir, tiny_sae_dir, out, "sweep"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    shards = sorted(out.glob("sweep/*/shard-*.parquet"))
    assert sorted(p.parent.name.split("-")[0] for p in shards) == ["random", "real", "synth_struct"]
    assert all(pq.read_metadata(p).num_rows == 6 for p in shards)


def test_all_positions_mode_writes_one_row_per_prompt_with_per_position_facts(tiny_cfg):
    cfg = with_(tiny_cfg, site={"positions": "all"})
    rows = _rows(run_job(cfg))
    assert len(rows) == cfg.data.n_prompts
    for r in rows:
        assert r["kl"][0] == 0.0 and r["kl"][-1] > 0
        per_position = json.loads(r["info_by_position"])["source_index"]  # schema 2: scalar = last position's
        assert len(per_position) == cfg.data.n_ctx and r["source_index"] == per_position[-1]  # one target per position
        assert len(set(per_position)) > 1


def test_open_sweep_reads_every_walk_shard_and_nothing_else(tiny_cfg):
    from sensdir.artifacts.schema import open_sweep

    run_job(tiny_cfg)
    run_job(with_(tiny_cfg, direction=RandomConfig()))
    sweep = Path(tiny_cfg.run.out_dir) / tiny_cfg.run.name
    (sweep / "hydra").mkdir()
    (sweep / "hydra" / "run.log").write_text("not parquet")
    t = open_sweep(sweep).to_table(columns=["direction"])
    assert sorted(set(t.column("direction").to_pylist())) == ["random", "real"]
    assert t.num_rows == 2 * tiny_cfg.data.n_prompts
