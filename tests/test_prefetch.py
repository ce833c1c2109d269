"""``sensdir-prefetch`` and the offline check (issue 15 G): prefetch fills an empty Hugging Face
cache with what the jobs of a run's overrides load and lists each resource; the same run then
works with HF_HUB_OFFLINE=1 from that cache alone; with nothing cached, one error names every
missing resource and the prefetch command.

The hub is a stand-in (tests/fake_hub.py): ``snapshot_download`` copies from the filled fixture
cache of tests/hf_fixtures.py, ``datasets`` streams its local Parquet file as OpenWebText.
Subprocesses get their own HF_HOME (huggingface_hub, transformers and datasets read it at import).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hf_fixtures import REVISION, HfCache, documents, repo_dir

REPO = Path(__file__).resolve().parent.parent
SMALL = ["data.n_prompts=6", "data.n_stats=60", "data.n_pool=12", "schedule.n_steps=9", "run.progress=false"]
NEED = 6 + 60 + 12  # rows each job reads (every fixture document is longer than n_ctx=10 tokens)
SWEEP = ["-m", "experiment=gp24_blowup", "direction=real,random", *SMALL]
JB1 = "gpt2-small-res-jb/blocks.1.hook_resid_pre"


def _run(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def _online(cache: HfCache) -> dict:
    """The login node: this cache, the hub reachable."""
    return {k: v for k, v in cache.env().items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}


def _prefetch(remote: HfCache, cache: HfCache, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    fake = str(REPO / "tests" / "fake_hub.py")
    return _run([fake, str(remote.home), str(remote.parquet), *args], env or _online(cache))


def _table(stdout: str) -> dict[tuple[str, str], dict]:
    """The listing's rows by (kind, resource name)."""
    lines = stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("kind "))
    cols = [lines[head].index(c) for c in ("status", "size", "resource", "path")]
    out = {}
    for ln in lines[head + 1 :]:
        if not ln or ln.startswith(" "):
            break
        kind, status, size, name = (ln[: cols[0]], ln[cols[0] : cols[1]], ln[cols[1] : cols[2]], ln[cols[2] : cols[3]])
        out[(kind.strip(), name.strip())] = {"status": status.strip(), "size": size.strip(), "path": ln[cols[3] :].strip()}
    return out


def _shuffled_stream(parquet: Path, seed: int = 0) -> list[str]:
    """The documents in the order an online job streams them."""
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(parquet), split="train", streaming=True)
    return [row["text"] for row in ds.shuffle(seed=seed, buffer_size=10_000)]


@pytest.fixture(scope="module")
def prefetched(hf_cache, tmp_path_factory):
    """An empty HF cache, filled by ``sensdir-prefetch <SWEEP>`` from the stand-in hub."""
    home = tmp_path_factory.mktemp("login_node") / "hf_home"
    home.mkdir()
    cache = HfCache(home=home, parquet=home / "none.parquet", d_model=hf_cache.d_model, unplaced={})
    res = _prefetch(hf_cache, cache, SWEEP)
    return cache, res


@pytest.mark.slow
def test_prefetch_fills_the_cache_and_lists_each_resource(prefetched):
    cache, res = prefetched
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    table = _table(res.stdout)
    dataset = "'Skylion007/openwebtext' (split 'train', seed 0)"
    assert set(table) == {("model", "'gpt2'"), ("tokenizer", "'gpt2'"), ("sae", JB1), ("dataset", dataset)}
    assert "4 resources for 2 jobs" in res.stdout
    for key, row in table.items():
        assert row["status"] == "fetched", (key, res.stdout)
        assert Path(row["path"]).exists() and str(cache.home) in row["path"], (key, row)
        assert row["size"].endswith(("kB", "MB")), (key, row)
    snap = repo_dir(cache.home, "gpt2") / "snapshots" / REVISION
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in snap.iterdir()}
    sae = repo_dir(cache.home, "jbloom/GPT2-Small-SAEs-Reformatted") / "snapshots" / REVISION / "blocks.1.hook_resid_pre"
    assert {"cfg.json", "sae_weights.safetensors"} <= {p.name for p in sae.iterdir()}
    # only the jobs' SAE, not every SAE of the repo
    assert [p.name for p in sae.parent.iterdir()] == ["blocks.1.hook_resid_pre"]
    calls = [json.loads(ln[9:]) for ln in res.stdout.splitlines() if ln.startswith("FAKE_HUB ")]
    assert {"dataset": "Skylion007/openwebtext", "streaming": True} in calls


@pytest.mark.slow
def test_prefetched_rows_are_the_stream_a_job_reads(prefetched, hf_cache):
    cache, res = prefetched
    (path,) = (cache.home / "sensdir" / "datasets" / "Skylion007--openwebtext").glob("train-seed0-*.parquet")
    assert str(path) in res.stdout
    rows = pq.read_table(path).column("text").to_pylist()
    stream = _shuffled_stream(hf_cache.parquet)
    assert len(rows) == NEED  # exactly what the jobs read: every fixture document qualifies
    assert rows == stream[:NEED] and rows != documents(400)[:NEED]  # the shuffled order, not the file's


@pytest.mark.slow
def test_run_after_prefetch_works_offline(prefetched, tmp_path):
    cache, _ = prefetched
    out = tmp_path / "results"
    res = _run(["-m", "sensdir.run", *SWEEP, f"run.out_dir={out}"], cache.env(), timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    shards = sorted(out.glob("gp24_blowup/*/shard-*.parquet"))
    assert [s.parent.name.split("-")[0] for s in shards] == ["random", "real"]
    for shard in shards:
        rows = pq.read_table(shard).to_pylist()
        assert len(rows) == 6 and all(r["kl"][0] == 0.0 and r["kl"][-1] > 0 for r in rows)
    # a second prefetch finds everything (the data counted with the jobs' tokenizer) and fetches nothing
    again = _prefetch(cache, cache, SWEEP)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {row["status"] for row in _table(again.stdout).values()} == {"found"}
    assert "FAKE_HUB" not in again.stdout and f"{NEED} rows" in again.stdout


@pytest.mark.slow
def test_offline_run_with_nothing_cached_names_every_missing_resource(empty_hf_cache, tmp_path):
    out = tmp_path / "results"
    args = ["model=gpt2-small", "sae=gpt2-small-res-jb", "data=openwebtext", *SMALL]
    res = _run(["-m", "sensdir.run", *args, f"run.out_dir={out}"], empty_hf_cache.env())
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "Retry" not in res.stderr, res.stderr[-3000:]
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("sensdir: error:")]
    for needle in (
        "cannot load model 'gpt2'",
        "tokenizer 'gpt2'",
        f"SAE {JB1} (Hugging Face repo 'jbloom/GPT2-Small-SAEs-Reformatted'",
        "dataset 'Skylion007/openwebtext' (split 'train', seed 0)",
        "none of these 4 is in the local cache",
        str(empty_hf_cache.home),
        "HF_HUB_OFFLINE",
        f"`sensdir-prefetch {' '.join(args)} run.out_dir={out}`",
    ):
        assert needle in line, (needle, line)
    assert "same command" not in line
    assert not list(out.rglob("*.parquet"))


@pytest.fixture()
def cache_at(monkeypatch):
    """In this process: huggingface_hub's cache at ``home``, offline (as hf_offline does)."""
    from huggingface_hub import constants

    def point(home: Path) -> None:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.delenv("SENSDIR_DATA_CACHE", raising=False)
        monkeypatch.setattr(constants, "HF_HOME", str(home))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    return point


def test_check_names_every_sae_of_a_sweep_at_once(cache_at, tmp_path, capsys):
    from sensdir.prefetch import main

    cache_at(tmp_path / "hf_home")
    assert main(["--check", "experiment=lh24_feature_l0"]) == 2
    out, err = capsys.readouterr()
    (line,) = [ln for ln in err.splitlines() if ln.startswith("sensdir: error:")]
    releases = ["jb", "_sll-ajt", "_sle-ajt", "_slefr-ajt", "_scl-ajt", "_sce-ajt", "_scefr-ajt"]
    for r in releases:
        assert f"SAE gpt2-small-res{'-' if r == 'jb' else ''}{r}/blocks.6.hook_resid_pre" in line, r
    assert line.count("; SAE ") == 7 and "none of these 10 is" in line
    assert "`sensdir-prefetch experiment=lh24_feature_l0`" in line
    assert "10 resources for 7 jobs" in out and out.count(" missing ") == 10


def test_check_names_only_what_is_missing(hf_offline, capsys):
    # the fixture cache holds the model, tokenizer and SAEs, but no prefetched data
    from sensdir.prefetch import main

    assert main(["--check", "experiment=gp24_blowup", *SMALL]) == 2
    out, err = capsys.readouterr()
    (line,) = [ln for ln in err.splitlines() if ln.startswith("sensdir: error:")]
    assert line.startswith("sensdir: error: cannot load dataset 'Skylion007/openwebtext'") and "it is in" not in line
    assert "model 'gpt2'" not in line and "SAE " not in line
    table = _table(out)
    assert table[("model", "'gpt2'")]["status"] == "found" and table[("sae", JB1)]["status"] == "found"
    assert Path(table[("sae", JB1)]["path"]).is_dir()


def test_dry_run_lists_and_fetches_nothing(cache_at, tmp_path, capsys):
    from sensdir.prefetch import main

    cache_at(tmp_path / "hf_home")
    assert main(["--dry-run", "-m", "experiment=gp24_blowup", "direction=real,random"]) == 0
    table = _table(capsys.readouterr().out)
    assert len(table) == 4 and {row["status"] for row in table.values()} == {"missing"}
    assert table[("sae", JB1)]["path"] == "(hub: jbloom/GPT2-Small-SAEs-Reformatted/blocks.1.hook_resid_pre)"
    assert not (tmp_path / "hf_home").exists()


def test_embedded_configs_need_nothing(capsys):
    from sensdir.prefetch import main

    assert main(["-m", "experiment=quickstart", "direction=real,random,synth_struct"]) == 0
    out = capsys.readouterr().out
    assert "nothing to fetch for 3 jobs" in out and "embedded" in out


def test_loader_reads_prefetched_rows_then_the_stream_past_them(cache_at, tmp_path, monkeypatch, hf_cache):
    """The prefetched rows first, then the stream from the row after them: the same documents
    as streaming alone. Offline, a job needing more rows than prefetched gets one plain error."""
    import datasets

    from sensdir import data_cache
    from sensdir.config import DataConfig
    from sensdir.data import _hf_documents
    from sensdir.errors import MissingResourceError

    cache_at(tmp_path / "hf_home")
    stream = _shuffled_stream(hf_cache.parquet)
    cfg = DataConfig(source="hf", dataset="Skylion007/openwebtext")
    data_cache.write_rows(data_cache.path_for(cfg, 0), cfg, 0, stream[:5])
    real, calls = datasets.load_dataset, []

    def load_dataset(path, name=None, **kw):
        calls.append(path)
        return real("parquet", data_files=str(hf_cache.parquet), split=kw["split"], streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    docs = _hf_documents(cfg, 0)
    assert [next(docs) for _ in range(5)] == stream[:5] and calls == []  # no hub for prefetched rows
    assert list(docs) == stream[5:] and calls == ["Skylion007/openwebtext"]

    def offline(path, name=None, **kw):
        from huggingface_hub.errors import OfflineModeIsEnabled

        raise OfflineModeIsEnabled("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MissingResourceError, match="past the 5 rows prefetched to .*sensdir-prefetch"):
        list(_hf_documents(cfg, 0))
    other_seed = _hf_documents(cfg, 1)  # another seed is another stream: not these rows
    with pytest.raises(MissingResourceError, match="cannot load dataset 'Skylion007/openwebtext'"):
        next(other_seed)
