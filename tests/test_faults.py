"""Faults around one job on the tiny model: damaged shards recomputed, concurrent identical
runs, run.name escapes, unreadable inputs and unwritable outputs as one clear error, file modes
(docs/reliability.md lists which fault each test shows)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import with_
from sensdir.artifacts.layout import ShardFiles
from sensdir.artifacts.records import is_complete, read_json
from sensdir.errors import ConfigError, CorruptResourceError, OutputError, SensdirError
from sensdir.job import run_job


def _no_partial_files(root: Path) -> None:
    left = [p for p in root.rglob("*") if p.suffix in (".parquet", ".tmp") or ".tmp" in p.name]
    assert left == [], left


def test_rerun_recomputes_a_damaged_shard(tiny_cfg, caplog):
    first = run_job(tiny_cfg)
    manifest = read_json(first.manifest_path)
    assert manifest is not None and len(manifest["parquet_sha256"]) == 64
    good = first.shard_path.read_bytes()
    data = bytearray(good)
    md = pq.ParquetFile(first.shard_path).metadata.row_group(0).column(0)
    for k in range(md.data_page_offset, md.data_page_offset + 16):
        data[k] ^= 0xFF
    first.shard_path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="sensdir"):
        again = run_job(tiny_cfg)
    assert not again.skipped
    assert any(
        "recomputing" in r.message and str(first.shard_path) in r.message and "sha256" in r.message for r in caplog.records
    )
    assert again.shard_path.read_bytes() == good  # same config and seed: the same bytes
    assert run_job(tiny_cfg).skipped


class _Waiting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("waiting:"):
            self.event.set()


def test_second_identical_run_waits_for_the_first_and_skips(tiny_cfg, tmp_path):
    import fcntl

    # the finished shard the "first run" will leave, computed elsewhere (out_dir is not identity)
    done = run_job(with_(tiny_cfg, run={"out_dir": str(tmp_path / "elsewhere")}))
    files = ShardFiles.of(Path(tiny_cfg.run.out_dir) / tiny_cfg.run.name / done.job_dir.name, 0, 1)
    files.job_dir.mkdir(parents=True)
    handler, result = _Waiting(), {}
    logging.getLogger("sensdir").addHandler(handler)
    try:
        with open(files.lock, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the first run holds the shard
            second = threading.Thread(target=lambda: result.setdefault("r", run_job(tiny_cfg)))
            second.start()
            assert handler.event.wait(120), "the second run did not wait for the lock"
            for src in (done.shard_path, done.manifest_path):
                shutil.copy(src, files.job_dir / src.name)  # the first run finishes...
            shutil.copy(done.shard_path.with_name(files.plan.name), files.plan)
        second.join(120)  # ...and releases the lock
    finally:
        logging.getLogger("sensdir").removeHandler(handler)
    assert result["r"].skipped and is_complete(files, read_json(files.manifest)["config_hash"])


@pytest.mark.parametrize("name", ["../../x", "a/../../b", "/tmp/abs", ".."])
def test_run_name_cannot_escape_out_dir(tiny_cfg, tmp_path, name):
    with pytest.raises(ConfigError, match="run.name"):
        run_job(with_(tiny_cfg, run={"name": name}))
    assert not list(tmp_path.rglob("*.parquet")) and not Path(tiny_cfg.run.out_dir).exists()


def test_unicode_and_spaces_in_run_name_work(tiny_cfg):
    res = run_job(with_(tiny_cfg, run={"name": "Über sweep ü/2"}))
    assert res.job_dir.parent == Path(tiny_cfg.run.out_dir) / "Über sweep ü" / "2" and res.n_rows > 0


def _copy_model(tiny_cfg, tmp_path: Path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(tiny_cfg.model.path, d)
    return d


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _bad_header(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")  # a header length past the end of the file
    p.write_bytes(bytes(data))


BROKEN_INPUT = {
    "truncated model.safetensors": ("model.safetensors", _truncate),
    "corrupt safetensors header": ("model.safetensors", _bad_header),
    "broken config.json": ("config.json", lambda p: p.write_text('{"n_layers": 2,')),
}


@pytest.mark.parametrize("case", sorted(BROKEN_INPUT))
def test_unreadable_model_file_is_one_error_naming_it(tiny_cfg, tmp_path, case):
    name, damage = BROKEN_INPUT[case]
    d = _copy_model(tiny_cfg, tmp_path)
    damage(d / name)
    with pytest.raises(CorruptResourceError) as e:
        run_job(with_(tiny_cfg, model={"path": str(d)}))
    assert str(d / name) in str(e.value) and "\n" not in str(e.value)
    assert not Path(tiny_cfg.run.out_dir).exists()


def test_cuda_device_without_cuda_is_a_config_error(tiny_cfg, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        run_job(with_(tiny_cfg, run={"device": "cuda"}))
    assert not Path(tiny_cfg.run.out_dir).exists()


def _fail_on(monkeypatch, target: str, err: int) -> None:
    import sensdir.artifacts.records as records

    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err), str(args[1] if target == "write_table" else kwargs.get("dir", "?")))

    if target == "write_table":
        monkeypatch.setattr(records.pq, "write_table", fail)
    else:
        monkeypatch.setattr(records.tempfile, "mkstemp", fail)


@pytest.mark.parametrize("case", ["full disk", "read-only folder (simulated)"])
def test_unwritable_output_is_one_error_and_no_partial_file(tiny_cfg, monkeypatch, case):
    if case == "full disk":
        _fail_on(monkeypatch, "write_table", errno.ENOSPC)
    else:
        _fail_on(monkeypatch, "mkstemp", errno.EROFS)
    with pytest.raises(OutputError) as e:
        run_job(tiny_cfg)
    assert isinstance(e.value, SensdirError) and "cannot write results to" in str(e.value)
    assert os.strerror(errno.ENOSPC if case == "full disk" else errno.EROFS) in str(e.value)
    _no_partial_files(Path(tiny_cfg.run.out_dir))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_error(tiny_cfg):
    out = Path(tiny_cfg.run.out_dir)
    out.mkdir(parents=True)
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=str(out)):
            run_job(tiny_cfg)
    finally:
        out.chmod(0o755)
    _no_partial_files(out)


def test_shards_manifests_and_plans_follow_the_umask(tiny_cfg):
    old = os.umask(0o022)
    try:
        res = run_job(tiny_cfg)
    finally:
        os.umask(old)
    for p in res.job_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert stat.S_IMODE(res.job_dir.stat().st_mode) == 0o755
