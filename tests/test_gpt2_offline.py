"""The GPT-2 small path (``model=gpt2-small sae=gpt2-small-res-jb data=openwebtext``) with
the unchanged production code, against local stand-ins in a temporary Hugging Face cache
(tests/hf_fixtures.py), offline.

huggingface_hub, transformers and datasets read HF_HOME / HF_HUB_OFFLINE when they are
imported, so everything that must see the temporary cache runs in a subprocess with that
environment (the CLI itself where the behaviour under test is the CLI's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hf_fixtures import PRESET_SAES

REPO = Path(__file__).resolve().parent.parent
GPT2 = ["model=gpt2-small", "sae=gpt2-small-res-jb", "data=openwebtext", "metric=gpt2"]
SMALL = ["data.n_prompts=6", "data.n_stats=60", "data.n_pool=12", "schedule.n_steps=9", "run.progress=false"]


def _run(args: list[str], env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def _cli(cache, overrides: list[str], timeout: int = 240, **env) -> subprocess.CompletedProcess:
    return _run(["-m", "sensdir.run", *overrides], cache.env(**env), timeout)


def _assert_one_plain_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 2, res.stderr[-3000:]
    both = res.stdout + res.stderr
    assert "Traceback" not in both, both[-3000:]
    assert "Retry" not in both and "thrown while requesting" not in both, both[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("sensdir: error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


@pytest.mark.slow
def test_cli_runs_gpt2_small_from_the_local_cache(hf_cache, tmp_path):
    out = tmp_path / "results"
    res = _cli(
        hf_cache,
        [*GPT2, "data.dataset=parquet", f"data.data_files={hf_cache.parquet}", *SMALL, f"run.out_dir={out}", "run.name=owt"],
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    (shard,) = out.glob("owt/real-*/shard-*.parquet")
    rows = pq.read_table(shard).to_pylist()
    assert len(rows) == 6
    for r in rows:
        assert len(r["kl"]) == 9 and r["kl"][0] == 0.0 and r["l2"][0] == 0.0
        assert r["kl"][-1] > r["kl"][1] > 0  # the walk toward another prompt moves GPT-2's output
    manifest = json.loads(next(shard.parent.glob("*.json")).read_text())
    assert manifest["config"]["model"]["name"] == "gpt2"
    assert manifest["config"]["sae"]["release"] == "gpt2-small-res-jb"


@pytest.mark.parametrize("release,sae_id", PRESET_SAES, ids=[f"{r}:{s}" for r, s in PRESET_SAES])
def test_preset_sae_loads_from_the_local_cache(hf_offline, release, sae_id):
    # in this process, huggingface_hub's constants patched (hf_offline); the CLI test above
    # covers the same route through HF_HOME / HF_HUB_OFFLINE in a fresh process
    from sae_lens import SAE

    assert (release, sae_id) not in hf_offline.unplaced, hf_offline.unplaced[(release, sae_id)]
    sae = SAE.from_pretrained(release, sae_id, device="cpu", dtype="float32")
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.metadata.hook_name) == (hf_offline.d_model, 128, sae_id)


def test_preset_sae_missing_from_the_cache_is_one_plain_error(hf_offline):
    from sensdir.config import SaeConfig
    from sensdir.errors import MissingResourceError
    from sensdir.loading import load_sae

    cfg = SaeConfig(source="sae_lens", release="gpt2-small-res-jb", sae_id="blocks.2.hook_resid_pre")
    with pytest.raises(MissingResourceError) as e:
        load_sae(cfg, "cpu")
    msg = str(e.value)
    assert "cannot load SAE gpt2-small-res-jb/blocks.2.hook_resid_pre" in msg and "HF_HUB_OFFLINE" in msg
    assert "hf download jbloom/GPT2-Small-SAEs-Reformatted --include 'blocks.2.hook_resid_pre/*'" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__


@pytest.mark.slow
def test_missing_model_is_one_plain_error(empty_hf_cache, tmp_path):
    out = tmp_path / "results"
    res = _cli(empty_hf_cache, [*GPT2, *SMALL, f"run.out_dir={out}"])
    line = _assert_one_plain_error(res, "cannot load model 'gpt2'", "HF_HUB_OFFLINE", "HF_HOME", str(empty_hf_cache.home))
    assert "sensdir-prefetch " in line and "same command" not in line  # prefetch, not the whole run, on a login node
    assert not list(out.rglob("*.parquet"))


_DATA = textwrap.dedent(
    """
    import json, sys
    from sensdir.config import DataConfig
    from sensdir.data import _hf_documents
    from sensdir.errors import MissingResourceError
    out = []
    for dataset, data_files in json.loads(sys.argv[1]):
        cfg = DataConfig(source="hf", dataset=dataset, data_files=data_files)
        try:
            out.append({"docs": list(_hf_documents(cfg, 0))})
        except MissingResourceError as e:
            out.append({"error": str(e), "cause": e.__cause__ is not None or not e.__suppress_context__})
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
def test_data_through_datasets_offline(hf_cache, tmp_path):
    """One offline subprocess with the fixture cache: the local Parquet file through the
    same ``datasets`` call as OpenWebText; the hub dataset (not cached) and a missing local
    file as one plain MissingResourceError each."""
    from hf_fixtures import documents

    missing = tmp_path / "nowhere.parquet"
    cases = [["parquet", str(hf_cache.parquet)], ["Skylion007/openwebtext", None], ["parquet", str(missing)]]
    res = _run(["-c", _DATA, json.dumps(cases)], hf_cache.env())
    assert res.returncode == 0, res.stderr[-3000:]
    local, hub, nofile = json.loads(next(x for x in res.stdout.splitlines() if x.startswith("RESULT"))[6:])
    assert sorted(local["docs"]) == sorted(documents(400)) and local["docs"] != documents(400)  # shuffled
    assert not hub["cause"] and not nofile["cause"]
    assert "cannot load dataset 'Skylion007/openwebtext'" in hub["error"] and "HF_HUB_OFFLINE" in hub["error"]
    assert "data.dataset=parquet data.data_files=" in hub["error"]
    assert "hf download Skylion007/openwebtext --repo-type dataset" in hub["error"]
    assert "cannot load dataset 'parquet'" in nofile["error"] and str(missing) in nofile["error"]


@pytest.mark.slow
def test_cli_missing_dataset_with_model_cached_is_one_plain_error(hf_cache, tmp_path):
    out = tmp_path / "results"
    res = _cli(hf_cache, [*GPT2, *SMALL, f"run.out_dir={out}"])
    _assert_one_plain_error(res, "cannot load dataset 'Skylion007/openwebtext'", "data.dataset=parquet")
    assert not list(out.rglob("*.parquet"))


@pytest.mark.slow
def test_unreachable_hub_without_offline_flag_gives_no_retry_spam(empty_hf_cache, tmp_path):
    # nothing listens on port 9: every request is refused, as on a machine without network;
    # huggingface_hub retries (about 25 s of backoff) before giving up
    env = {
        k: v
        for k, v in empty_hf_cache.env(HF_ENDPOINT="http://127.0.0.1:9").items()
        if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    res = _run(["-m", "sensdir.run", *GPT2, *SMALL, f"run.out_dir={tmp_path}"], env, timeout=300)
    _assert_one_plain_error(res, "cannot load model 'gpt2'", "unreachable")


# The GPT-2 presets as a cluster user runs them (``-m experiment=<name>``), only the data
# pointed at the local Parquet file and the sizes shrunk; every job must write a shard.
PRESETS = {
    "gp24_blowup": (["schedule.n_steps=9"], 5),  # 5 directions
    "gp24_plateau": (["schedule.n_steps=9"], 4),  # 4 starts
    "lh24_feature_l0": ([], 7),  # 7 SAE releases at layer 6 (jb and Braun et al.'s)
    "g24_error_pathology": (["direction=sae_error"], 7),  # the 7 releases, one direction of the 4
    # 6 pair sources, 14 rows (2 pairs x 7 angles) per base; first-letter prompts fit n_ctx 64
    "fh26_error_correction": (["direction.probe_icl_examples=1"], 6),
}
ROWS_PER_BASE = {"fh26_error_correction": 14}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_gpt2_preset_runs_from_the_local_cache(hf_cache, tmp_path, preset):
    extra, n_jobs = PRESETS[preset]
    out = tmp_path / "results"
    res = _cli(
        hf_cache,
        [
            "-m",
            f"experiment={preset}",
            "data.dataset=parquet",
            f"data.data_files={hf_cache.parquet}",
            "data.n_prompts=4",
            "data.n_stats=60",
            "data.n_pool=12",
            "run.progress=false",
            f"run.out_dir={out}",
            *extra,
        ],
        timeout=600,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    shards = sorted(out.glob(f"{preset}/*/shard-*.parquet"))
    assert len(shards) == n_jobs
    for shard in shards:
        rows = pq.read_table(shard).to_pylist()
        assert len(rows) == 4 * ROWS_PER_BASE.get(preset, 1)
        # (an error_correction row whose base has no pair, pair_ok false, stays at A)
        assert all(r["kl"][0] == 0.0 and (max(r["kl"]) > 0 or r.get("pair_ok") is False) for r in rows)
