"""Reduce: statistics on hand-made data, completeness detection, outputs, secrets, W&B."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import reseal
from sensdir.reduce import IncompleteSweepError, reduce_sweep
from sensdir.reduce.__main__ import main as reduce_main
from sensdir.reduce.completeness import check_completeness
from sensdir.reduce.read import list_to_2d, read_sweep, value_at
from sensdir.reduce.stats import bootstrap_mean_ci, ks_2samp, lookup
from sensdir.reduce.synthetic import JobSpec, job_key, make_sweep

FAKE_KEY = "fakewandbkey0123456789abcdef0123456789abcd"


def _sweep(tmp_path: Path, name: str = "sweep", shards: int = 2) -> Path:
    return make_sweep(
        tmp_path / name,
        [JobSpec("real", 60, shards=shards), JobSpec("random", 60, shards=shards), JobSpec("synth_struct", 40, shards=1)],
    )


def _set_column(path: Path, name: str, values) -> None:
    t = pq.read_table(path)
    i = t.schema.get_field_index(name)
    t = t.set_column(i, t.schema.field(i), pa.array(values, type=t.schema.field(i).type))
    pq.write_table(t, path)
    reseal(path)


def _job_dirs(sweep: Path) -> dict[str, Path]:
    return {d.name.split("-")[0]: d for d in sweep.iterdir() if d.is_dir() and d.name != "hydra"}


# ---- statistics on hand-made data -------------------------------------------------------


def test_ks_of_identical_samples_is_zero_and_of_disjoint_is_one():
    x = np.array([1.0, 2, 2, 3, 5, 8])
    d, p = ks_2samp(x, x.copy())
    assert d == 0.0 and p == pytest.approx(1.0)
    d, _ = ks_2samp(np.arange(10.0), np.arange(10.0) + 100)
    assert d == 1.0


def test_bootstrap_ci_brackets_the_mean_and_matches_row_resampling():
    rng = np.random.default_rng(0)
    x = rng.integers(40, 80, 500).astype(float)
    lo, hi = bootstrap_mean_ci(x, 4000, np.random.default_rng(1))
    assert lo < x.mean() < hi
    # naive row resampling gives the same interval up to Monte-Carlo error
    means = x[rng.integers(0, len(x), (4000, len(x)))].mean(1)
    nlo, nhi = np.quantile(means, [0.025, 0.975])
    assert lo == pytest.approx(nlo, abs=0.15) and hi == pytest.approx(nhi, abs=0.15)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)
    c = np.full(50, 7.0)
    assert bootstrap_mean_ci(c, 100, np.random.default_rng(0)) == (7.0, 7.0)


def test_summary_statistics_of_hand_made_shards(tmp_path):
    sweep = _sweep(tmp_path, shards=1)
    jobs = _job_dirs(sweep)
    real_ms = np.arange(60) % 7 + 40
    # random: the very same sample as real -> KS 0; synth_struct: shifted by 50 -> KS 1
    for name, vals in (("real", real_ms), ("random", real_ms)):
        _set_column(jobs[name] / "shard-00000-of-00001.parquet", "ms_step_kl", vals)
    _set_column(jobs["synth_struct"] / "shard-00000-of-00001.parquet", "ms_step_kl", np.arange(40) % 7 + 90)
    table = reduce_sweep(sweep, tmp_path / "out", wandb="disabled", n_bootstrap=200, progress=False).table_parquet
    t = pq.read_table(table)

    def val(direction, statistic, metric="ms_step_kl"):
        (row,) = lookup(t, section="summary", direction=direction, metric=metric, statistic=statistic)
        return row["value"]

    assert val("real", "mean") == pytest.approx(real_ms.mean())
    assert val("real", "sd") == pytest.approx(real_ms.std(ddof=1))
    assert val("real", "median") == pytest.approx(np.median(real_ms))
    assert val("real", "ci95_low") < real_ms.mean() < val("real", "ci95_high")
    assert val("random", "ks_vs_real") == 0.0
    assert val("random", "ks_pvalue_vs_real") == pytest.approx(1.0)
    assert val("synth_struct", "ks_vs_real") == 1.0
    assert not lookup(t, direction="real", statistic="ks_vs_real")  # no KS of real against itself
    csv = (tmp_path / "out" / "stats.csv").read_text().splitlines()
    assert csv[0].startswith('"section","direction"') and len(csv) == t.num_rows + 1


def test_streamed_mean_curves_equal_the_in_memory_means(tmp_path):
    sweep = make_sweep(tmp_path / "s", [JobSpec("real", 50, shards=2, schedule="absolute", grid_kind="distance")])
    comp = check_completeness(sweep, progress=False)
    data = read_sweep(comp, progress=False, batch_rows=7)
    full = pa.concat_tables([pq.read_table(p) for p in sorted(sweep.glob("*/*.parquet"))])
    kl = list_to_2d(full.column("kl"))
    assert np.isnan(kl).any()  # the absolute schedule dropped steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps dropped in every row: all-NaN columns
        expect = np.nanmean(kl, 0)
    np.testing.assert_allclose(data.curves[0].mean("kl"), expect, rtol=1e-5)
    assert data.n_rows == 50 and len(data.examples[0]) == 3


def test_list_to_2d_pads_ragged_rows_and_value_at_interpolates():
    arr = pa.array([[1.0, None, 3.0], [4.0]], type=pa.list_(pa.float32()))
    out = list_to_2d(arr)
    assert out.shape == (2, 3) and out[0, 2] == 3 and np.isnan(out[0, 1]) and np.isnan(out[1, 1:]).all()
    grid = np.array([[0, 1, 2, 3], [0, 1, 2, 3]], float)
    y = np.array([[0, 10, 20, 30], [0, 1, np.nan, np.nan]], float)
    np.testing.assert_allclose(value_at(grid, y, np.array([1.5, 5.0])), [15.0, 1.0])


def test_error_pathology_and_feature_l0_activate_on_their_columns(tmp_path):
    sae_a = {"source": "embedded", "release": "embedded", "sae_id": "blocks.1.hook_resid_pre/topk-16"}
    sae_b = {"source": "embedded", "release": "embedded", "sae_id": "blocks.1.hook_resid_pre/topk-64"}
    specs = [
        JobSpec("sae_error", 30, schedule="absolute", grid_kind="distance", natural_length=True, center=20),
        JobSpec("eps_random", 30, schedule="absolute", grid_kind="distance", natural_length=True, center=60),
        JobSpec("cov_mixture", 30, schedule="absolute", grid_kind="distance", natural_length=True, center=40),
        JobSpec("sae_feature", 20, schedule="lengths", grid_kind="length", sae=sae_a, n_steps=12),
        JobSpec("sae_feature", 20, schedule="lengths", grid_kind="length", sae=sae_b, n_steps=12),
    ]
    sweep = make_sweep(tmp_path / "s", specs)
    res = reduce_sweep(sweep, tmp_path / "out", wandb="disabled", n_bootstrap=50, progress=False)
    t = pq.read_table(res.table_parquet)
    means = {r["direction"]: r["value"] for r in lookup(t, section="error_pathology", statistic="mean")}
    # the expected KL at the natural length, computed row by row from the shards
    for d in ("sae_error", "eps_random", "cov_mixture"):
        tab = pq.read_table(next(sweep.glob(f"{d}-*/*.parquet")))
        kl, grid = list_to_2d(tab.column("kl")), list_to_2d(tab.column("grid"))
        nl = tab.column("natural_length").to_numpy()
        expect = np.mean([np.interp(x, g[~np.isnan(k)], k[~np.isnan(k)]) for x, g, k in zip(nl, grid, kl)])
        assert means[d] == pytest.approx(expect, rel=1e-5)
    ratios = {r["metric"]: r["value"] for r in lookup(t, section="error_pathology", statistic="ratio")}
    assert set(ratios) == {"kl_ratio_vs_eps_random", "kl_ratio_vs_cov_mixture"}
    assert ratios["kl_ratio_vs_eps_random"] == pytest.approx(means["sae_error"] / means["eps_random"])
    curves = lookup(t, section="feature_l0")
    assert {r["sae"] for r in curves} == {"blocks.1.hook_resid_pre/topk-16", "blocks.1.hook_resid_pre/topk-64"}
    assert len(curves) == 24 and all(r["x"] is not None for r in curves)
    assert {"error_pathology", "feature_l0"} <= set(res.figures)
    assert all(p.stat().st_size > 1000 for p in res.figures.values())


# ---- completeness -----------------------------------------------------------------------


def test_complete_sweep_is_ok(tmp_path):
    comp = check_completeness(_sweep(tmp_path), progress=False)
    assert comp.ok, comp.problems()
    assert comp.n_planned == comp.n_present == 160 and len(comp.shards) == 5


def test_deleted_shard_is_detected_and_named(tmp_path):
    sweep = _sweep(tmp_path)
    victim = next(_job_dirs(sweep)["random"].glob("shard-00001-*.parquet"))
    victim.unlink()
    comp = check_completeness(sweep, progress=False)
    assert not comp.ok and comp.missing_shards == [str(victim)]
    assert comp.n_missing_rows == 30
    # gone with its plan too: the other shard's plan still says shards=2
    victim.with_name(victim.name.replace(".parquet", ".plan.json")).unlink()
    comp = check_completeness(sweep, progress=False)
    assert comp.missing_shards == [str(victim)]
    with pytest.raises(IncompleteSweepError, match=victim.name):
        reduce_sweep(sweep, tmp_path / "out", wandb="disabled", progress=False)


def test_duplicated_shard_is_detected_and_named_and_counted_once(tmp_path):
    sweep = _sweep(tmp_path)
    src = next(_job_dirs(sweep)["real"].glob("shard-00000-*.parquet"))
    dup = src.with_name("shard-00000-of-00001.parquet")  # e.g. a rerun with another shard count
    shutil.copy(src, dup)
    manifest = json.loads(src.with_name(src.name.replace(".parquet", ".manifest.json")).read_text())
    dup.with_name("shard-00000-of-00001.manifest.json").write_text(json.dumps({**manifest, "parquet": dup.name}))
    comp = check_completeness(sweep, progress=False)
    assert not comp.ok and comp.n_duplicated_rows == 30
    files = next(iter(comp.duplicated_rows.values()))
    assert sorted(files) == sorted([str(src), str(dup)])
    assert any(dup.name in p for p in comp.problems())
    res = reduce_sweep(sweep, tmp_path / "out", allow_partial=True, wandb="disabled", n_bootstrap=10, progress=False)
    assert res.n_rows == 160  # the duplicate copies are skipped


def test_truncated_shard_is_detected_and_named(tmp_path):
    sweep = _sweep(tmp_path)
    victim = next(_job_dirs(sweep)["synth_struct"].glob("*.parquet"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    comp = check_completeness(sweep, progress=False)
    assert not comp.ok and list(comp.corrupt_files) == [str(victim)]
    assert comp.n_missing_rows == 40
    assert any(str(victim) in p for p in comp.problems())


def test_shard_with_fewer_rows_than_its_manifest_is_truncated(tmp_path):
    sweep = _sweep(tmp_path)
    victim = next(_job_dirs(sweep)["real"].glob("shard-00000-*.parquet"))
    pq.write_table(pq.read_table(victim).slice(0, 10), victim)
    comp = check_completeness(sweep, progress=False)
    assert list(comp.corrupt_files) == [str(victim)] and "manifest says" in comp.corrupt_files[str(victim)]
    reseal(victim)  # the checksum matches, the row count does not
    comp = check_completeness(sweep, progress=False)
    assert list(comp.truncated_files) == [str(victim)]
    assert "10 rows, manifest says 30" in comp.truncated_files[str(victim)]
    assert comp.n_missing_rows == 20


def test_cli_refuses_incomplete_data_and_allow_partial_reports_it(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    victim = next(_job_dirs(sweep)["random"].glob("shard-00000-*.parquet"))
    victim.unlink()
    out = tmp_path / "out"
    assert reduce_main([str(sweep), "--out", str(out), "--wandb", "disabled", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "incomplete" in err and victim.name in err and "--allow-partial" in err
    assert not (out / "report.html").exists()
    assert json.loads((out / "completeness.json").read_text())["missing_shards"] == [str(victim)]
    rc = reduce_main(
        [str(sweep), "--out", str(out), "--wandb", "disabled", "--no-progress", "--allow-partial", "--bootstrap", "20"]
    )
    assert rc == 0
    page = (out / "report.html").read_text()
    assert "Partial data" in page and victim.name in page and "30 planned row(s) missing" in page


# ---- outputs, secrets, W&B --------------------------------------------------------------


def test_outputs_and_offline_wandb_run_and_no_secret_anywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = tmp_path / "sweep"
    # a config that carries the key (by field name and inside a string) must be scrubbed too
    spec = JobSpec("real", 30, extra_config={"wandb": {"api_key": FAKE_KEY, "note": f"key={FAKE_KEY}"}})
    # an absolute-step job too: plateau lengths are drawn only for those (METHODS §10)
    make_sweep(sweep, [spec, JobSpec("random", 30), JobSpec("random", 20, schedule="absolute", grid_kind="distance")])
    res = reduce_sweep(sweep, None, wandb="offline", n_bootstrap=50, progress=False)
    out = sweep / "reduce"
    assert res.out_dir == out and res.wandb["mode"] == "offline"
    for p in (res.table_parquet, res.table_csv, res.html, *res.figures.values()):
        assert p.exists() and p.stat().st_size > 0
    assert {"curves", "ms_step", "plateau"} <= set(res.figures)
    page = res.html.read_text()
    assert page.count("data:image/png;base64,") == len(res.figures)
    assert 'src="http' not in page and "git_commit" in page and job_key(spec) in page
    run_dir = Path(res.wandb["run_dir"])
    assert run_dir.is_dir() and run_dir.is_relative_to(out)
    media = [p.name for p in run_dir.rglob("*") if p.is_file()]
    assert any(n.startswith("summary_table") and n.endswith(".table.json") for n in media)
    assert sum(n.endswith(".png") for n in media) == len(res.figures)
    # the job's own config held the key (the input); nothing the reduce wrote may hold it
    assert [p for p in out.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()] == []
    assert "&lt;redacted&gt;" in page


def test_wandb_mode_auto_follows_the_api_key(monkeypatch, tmp_path):
    from sensdir.reduce.wb import resolve_mode

    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("WANDB_MODE", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    answers = lambda: True  # noqa: E731 - a server that answers (never asked over the network here)
    assert resolve_mode("auto", probe=answers) == "offline"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password xyz0123456789\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto", probe=answers) == "online"
    netrc.write_text("")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode("auto", probe=answers) == "online"
    assert resolve_mode("auto", probe=lambda: False) == "offline"
    assert resolve_mode("disabled") == "disabled"
    with pytest.raises(ValueError):
        resolve_mode("cloud")


@pytest.mark.filterwarnings("ignore:Pydantic V1 style:DeprecationWarning")  # inside wandb_workspaces
def test_wandb_report_is_built_offline_with_the_panels(monkeypatch):
    import wandb_workspaces.reports.v2 as wr

    from sensdir.reduce.wb import TABLE_KEY, build_report

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    report = build_report("ent", "sensdir", "reduce-q", ["curves", "ms_step", "plateau"], "q", notes="PARTIAL DATA: x")
    assert isinstance(report, wr.Report) and report.entity == "ent" and report.project == "sensdir"
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    panels = [p for g in grids for p in g.panels]
    assert any(isinstance(p, wr.WeavePanelSummaryTable) and p.table_name == TABLE_KEY for p in panels)
    media = [k for p in panels if isinstance(p, wr.MediaBrowser) for k in p.media_keys]
    assert media == ["figures/curves", "figures/ms_step", "figures/plateau"]
    assert all(rs.query == "reduce-q" for g in grids for rs in g.runsets)
    assert any(isinstance(b, wr.CalloutBlock) for b in report.blocks)


@pytest.mark.slow
def test_reduce_of_real_jobs_on_the_tiny_model(tiny_cfg):
    from helpers import with_
    from sensdir.directions.random import RandomConfig
    from sensdir.job import run_job

    for direction in (tiny_cfg.direction, RandomConfig()):
        for shard in range(2):
            run_job(with_(tiny_cfg, direction=direction, run={"shards": 2, "shard": shard}))
    sweep = Path(tiny_cfg.run.out_dir) / tiny_cfg.run.name
    res = reduce_sweep(sweep, None, wandb="disabled", n_bootstrap=50, progress=False)
    assert res.completeness.ok and res.n_rows == 24
    t = pq.read_table(res.table_parquet)
    assert lookup(t, direction="random", metric="ms_step_kl", statistic="ks_vs_real")
    # relative walks only: no plateau lengths (they would mean nothing there)
    assert res.html.exists() and set(res.figures) == {"curves", "ms_step"}
    assert not lookup(t, metric="plateau_len")


def test_labelled_variants_are_compared_with_their_real_variant():
    from sensdir.reduce.stats import reference_of

    assert reference_of("synth_struct") == "real"
    assert reference_of("plateau:synth_struct") == "plateau:real"
    assert reference_of("sae_feature:dead") == "sae_feature:real"
