"""Damaged, foreign and missing files in a sweep: named, never read, reported as missing rows;
the reduce's outputs as one set; files that follow the umask; strict JSON. Synthetic sweeps,
no model (docs/reliability.md lists which fault each test shows)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sensdir.artifacts.records import dumps_json, write_json_atomic
from sensdir.artifacts.schema import open_sweep
from sensdir.artifacts.sweep_plan import write_sweep_plan
from sensdir.reduce import IncompleteSweepError, reduce_sweep
from sensdir.reduce.__main__ import main as reduce_main
from sensdir.reduce.completeness import check_completeness
from sensdir.reduce.synthetic import JobSpec, job_key, make_sweep
from sensdir.status import sweep_status

SPECS = [JobSpec("real", 60, shards=2), JobSpec("random", 60, shards=2)]


def _sweep(tmp_path: Path) -> Path:
    return make_sweep(tmp_path / "sweep", SPECS)


def _shard(sweep: Path, direction: str = "real", i: int = 0) -> Path:
    return sweep / job_key(next(s for s in SPECS if s.direction == direction)) / f"shard-{i:05d}-of-00002.parquet"


def _xor(path: Path, offset: int, n: int) -> None:
    data = bytearray(path.read_bytes())
    for k in range(offset, offset + n):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def _data_page_offset(path: Path) -> int:
    """An offset inside the ``l2`` column's data pages (not the footer)."""
    md = pq.ParquetFile(path).metadata.row_group(0)
    col = next(md.column(j) for j in range(md.num_columns) if md.column(j).path_in_schema.startswith("l2"))
    return col.data_page_offset + col.total_compressed_size // 2


FAULTS = {
    "byte flip in a data page": lambda p: _xor(p, _data_page_offset(p), 16),
    "byte flip in the footer": lambda p: _xor(p, p.stat().st_size - 200, 8),
    "truncation": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "bytes appended": lambda p: p.write_bytes(p.read_bytes() + b"\0" * 64),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_damaged_shard_is_named_never_read_and_its_rows_missing(tmp_path, fault, capsys):
    sweep = _sweep(tmp_path)
    victim = _shard(sweep)
    FAULTS[fault](victim)
    comp = check_completeness(sweep, progress=False)
    assert not comp.ok and list(comp.corrupt_files) == [str(victim)]
    assert "manifest says" in comp.corrupt_files[str(victim)]  # what failed: size or sha256
    assert comp.n_missing_rows == 30 and comp.n_present == 90
    out = tmp_path / "out"
    assert reduce_main([str(sweep), "--out", str(out), "--wandb", "disabled", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert str(victim) in err and "Traceback" not in err
    res = reduce_sweep(sweep, out, allow_partial=True, wandb="disabled", n_bootstrap=10, progress=False)
    assert res.n_rows == 90  # the damaged file's values never reach the statistics
    with pytest.warns(UserWarning, match=victim.name):
        assert open_sweep(sweep).count_rows() == 90


def test_foreign_copy_is_reported_and_never_read(tmp_path):
    sweep = _sweep(tmp_path)
    src = _shard(sweep)
    copy = src.with_name("shard-00000-of-00002.copy.parquet")
    shutil.copy(src, copy)
    comp = check_completeness(sweep, progress=False)
    assert comp.foreign_files == {str(copy): comp.foreign_files[str(copy)]}
    assert comp.n_duplicated_rows == 0 and comp.n_present == 120 and not comp.ok
    assert any(copy.name in p and "foreign" in p for p in comp.problems())
    with pytest.warns(UserWarning, match=copy.name):
        assert open_sweep(sweep).count_rows() == 120  # not twice
    res = reduce_sweep(sweep, tmp_path / "out", allow_partial=True, wandb="disabled", n_bootstrap=10, progress=False)
    assert res.n_rows == 120


@pytest.mark.parametrize("deleted", ["manifest", "plan", "plan and Parquet file"])
def test_deleted_plan_or_manifest(tmp_path, deleted):
    sweep = _sweep(tmp_path)
    victim = _shard(sweep, "random", 1)
    stem = victim.name.removesuffix(".parquet")
    if "manifest" in deleted:
        (victim.parent / f"{stem}.manifest.json").unlink()
    if "plan" in deleted:
        (victim.parent / f"{stem}.plan.json").unlink()
    if "Parquet" in deleted:
        victim.unlink()
    comp = check_completeness(sweep, progress=False)
    if deleted == "manifest":  # a shard's own file without a complete manifest: named, not read
        assert comp.unfinished_files == [str(victim)] and comp.n_missing_rows == 30 and not comp.ok
    elif deleted == "plan":  # the manifest vouches for the file; the rows are all there
        assert comp.ok and comp.n_present == 120, comp.problems()
    else:  # the manifest names a file that is gone; the other shard's plan expects it
        assert comp.corrupt_files.keys() == {str(victim)} and str(victim) in comp.missing_shards
        assert "missing" in comp.corrupt_files[str(victim)] and not comp.ok


def _plan_extra_job(sweep: Path) -> str:
    """A sweep plan that also lists an ``isotropic`` job that never started."""
    jobs = [
        {
            "job_num": n,
            "overrides": [f"direction={s.direction}", f"run.shard={i}"],
            "job_key": job_key(s),
            "shard": i,
            "shards": 2,
        }
        for n, (s, i) in enumerate((s, i) for s in SPECS for i in range(2))
    ]
    ghost = "isotropic-0123456789"
    jobs += [
        {"job_num": 4 + i, "overrides": ["direction=isotropic", f"run.shard={i}"], "job_key": ghost, "shard": i, "shards": 2}
        for i in range(2)
    ]
    write_sweep_plan(sweep, "2026-01-01_00-00-00-1", jobs, str(sweep / "hydra" / "2026-01-01_00-00-00-1"))
    return ghost


def test_never_started_jobs_are_named_by_status_reduce_and_partial_report(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    ghost = _plan_extra_job(sweep)
    comp = check_completeness(sweep, progress=False)
    assert not comp.ok and len(comp.never_started) == 2
    assert all(ghost in d and "direction=isotropic" in d for d in comp.never_started)
    status = sweep_status(sweep, squeue=None)
    assert [t.shard for t in status.by_state("not_started")] == [0, 1] and status.exit_code == 1
    assert "direction=isotropic" in status.render()
    out = tmp_path / "out"
    assert reduce_main([str(sweep), "--out", str(out), "--wandb", "disabled", "--no-progress"]) == 3
    assert "never started" in capsys.readouterr().err
    reduce_sweep(sweep, out, allow_partial=True, wandb="disabled", n_bootstrap=10, progress=False)
    page = (out / "report.html").read_text()
    assert "Partial data" in page and ghost in page and "direction=isotropic" in page


def test_refused_reduce_leaves_no_stale_report(tmp_path):
    sweep = _sweep(tmp_path)
    out = tmp_path / "out"
    reduce_sweep(sweep, out, wandb="disabled", n_bootstrap=10, progress=False)
    assert (out / "report.html").exists()
    _shard(sweep).unlink()
    with pytest.raises(IncompleteSweepError):
        reduce_sweep(sweep, out, wandb="disabled", n_bootstrap=10, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["completeness.json"]  # no report of other data beside it
    assert json.loads((out / "completeness.json").read_text())["ok"] is False


def test_failed_reduce_keeps_the_previous_set_whole(tmp_path, monkeypatch):
    import sensdir.reduce as reduce_pkg

    sweep = _sweep(tmp_path)
    out = tmp_path / "out"
    reduce_sweep(sweep, out, wandb="disabled", n_bootstrap=10, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _shard(sweep, "random", 1).unlink()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reduce_pkg, "write_html", broken)
    with pytest.raises(OSError):
        reduce_sweep(sweep, out, allow_partial=True, wandb="disabled", n_bootstrap=10, progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the old set, whole: not a fresh completeness.json beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sweep"]  # no temporary folder left


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        sweep = _sweep(tmp_path)
        write_json_atomic(sweep / "x.json", {"a": 1})
        reduce_sweep(sweep, None, wandb="disabled", n_bootstrap=10, progress=False)
    finally:
        os.umask(old)
    for p in [sweep, *sweep.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), f"{p}: {oct(mode)}"


def test_json_is_strict_and_names_non_finite_values(tmp_path):
    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))

    obj = strict(dumps_json({"config": {"metric": {"ms_threshold": float("nan")}}, "xs": [1.0, float("inf")]}))
    assert obj["config"]["metric"]["ms_threshold"] is None and obj["xs"] == [1.0, None]
    assert obj["nonfinite_as_null"] == ["config.metric.ms_threshold", "xs[1]"]
    sweep = make_sweep(tmp_path / "s", [JobSpec("real", 10, extra_config={"metric": {"ms_threshold": float("nan")}})])
    for p in sweep.rglob("*.json"):
        strict(p.read_text())
    for p in sweep.rglob("*.parquet"):
        strict(pq.read_schema(p).metadata[b"sensdir"].decode())
