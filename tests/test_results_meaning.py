"""Numbers that say when they mean nothing (METHODS §10): censored summaries, plateau lengths
only on absolute walks, target facts, tie rules that no batch shape can flip, settings checked
at startup."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from helpers import with_
from sensdir.config import MetricConfig, PlateauRule
from sensdir.errors import ConfigError
from sensdir.job import run_job
from sensdir.metrics import thresholds
from sensdir.metrics.summaries import at_last_valid_step, max_slope_step, never_reached, plateau_length
from sensdir.reduce import reduce_sweep
from sensdir.reduce.stats import lookup
from sensdir.reduce.synthetic import JobSpec, make_sweep
from sensdir.validate import validate_walks

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ censoring on hand-made curves
def _curves():
    steps = torch.arange(10, dtype=torch.float32)
    rise_mid = torch.where(steps >= 5, 1.0, 0.0) + 0.001 * steps  # jumps into step 5
    rise_last = torch.where(steps >= 9, 1.0, 0.0)  # jumps into the last step
    flat = 0.001 * steps  # never rises by more than the threshold
    return torch.stack([rise_mid, rise_last, flat]), torch.ones(3, 10, dtype=torch.bool)


def test_max_slope_censoring_on_hand_made_curves():
    y, valid = _curves()
    ms = max_slope_step(y, valid, threshold=0.02)
    assert ms.tolist() == [5, 9, 9]
    assert at_last_valid_step(ms, valid).tolist() == [False, True, True]
    # a walk truncated by the schedule: its last valid step is the censoring point
    valid[0, 7:] = False
    short = torch.where(valid, y, torch.nan)
    ms = max_slope_step(short, valid, threshold=0.02)
    assert ms[0] == 5 and not at_last_valid_step(ms, valid)[0]
    valid[0, 5:] = False
    ms = max_slope_step(torch.where(valid, y, torch.nan), valid, threshold=0.02)
    assert ms[0] == 4 and at_last_valid_step(ms, valid)[0]


def test_plateau_never_left_is_censored():
    y = torch.tensor([[0.0, 1, 2, 3, 4], [0.0, 0.5, 1, 1.5, 2]])
    valid = torch.ones(2, 5, dtype=torch.bool)
    p = plateau_length(y, valid, threshold=3.0)
    assert p.tolist() == [3, 5] and never_reached(p, valid).tolist() == [False, True]


def test_near_equal_rises_go_to_the_earliest():
    y = torch.tensor([[0.0, 0.0, 1.0, 1.0, 2.0 + 5e-7]])  # rises of 1.0 into step 2 and 1.0000005 into 4
    valid = torch.ones(1, 5, dtype=torch.bool)
    assert max_slope_step(y, valid, 0.02, tie_rtol=0.0).item() == 4
    assert max_slope_step(y, valid, 0.02, tie_rtol=1e-3).item() == 2
    y2 = torch.tensor([[0.0, 0.0, 1.0, 1.0, 2.5]])  # a clearly larger rise still wins
    assert max_slope_step(y2, valid, 0.02, tie_rtol=1e-3).item() == 4


def test_plateau_threshold_on_the_models_scale():
    cfg = MetricConfig(plateau_l2=0.2, plateau_rule=PlateauRule.final_norm)
    resolved, record = thresholds.resolve(cfg, median_final_norm=30.0)
    assert resolved.plateau_l2 == pytest.approx(6.0) and record["plateau_l2"] == pytest.approx(6.0)
    assert "0.2 x median final-residual norm 30" in record["plateau_rule_text"]
    absolute, record = thresholds.resolve(MetricConfig(plateau_l2=20.0), median_final_norm=30.0)
    assert absolute.plateau_l2 == 20.0 and record["plateau_rule"] == "absolute"


# ----------------------------------------------------------------------- the reduce's view of them
def test_reduce_reports_censored_rows_apart_and_plateaus_only_for_absolute_walks(tmp_path):
    sweep = make_sweep(
        tmp_path / "s",
        [JobSpec("real", 60), JobSpec("random", 60, flat=0.3), JobSpec("real", 40, schedule="absolute", grid_kind="distance")],
    )
    res = reduce_sweep(sweep, tmp_path / "out", wandb="disabled", n_bootstrap=20, progress=False)
    t = pq.read_table(res.table_parquet)
    shards = pq.read_table(next((sweep / [p.name for p in sweep.iterdir() if p.name.startswith("random")][0]).glob("*.parquet")))
    flags = np.asarray(shards.column("ms_step_kl_censored").to_pylist())
    frac = lookup(t, direction="random", schedule="relative", metric="ms_step_kl", statistic="censored_fraction")
    assert frac[0]["value"] == pytest.approx(flags.mean()) and 0 < flags.mean() < 1
    ms = np.asarray(shards.column("ms_step_kl").to_pylist())
    unc = lookup(t, direction="random", schedule="relative", metric="ms_step_kl", statistic="mean_uncensored")
    assert unc[0]["value"] == pytest.approx(ms[~flags].mean()) and unc[0]["n"] == (~flags).sum()
    assert lookup(t, direction="random", schedule="relative", metric="ms_step_kl", statistic="ks_vs_real_uncensored")
    # plateau lengths: absolute walks only
    assert not lookup(t, schedule="relative", metric="plateau_len")
    assert lookup(t, schedule="absolute", metric="plateau_len", statistic="mean")
    html = res.html.read_text()
    assert "censored_fraction" in html and "mean_uncensored" in html


def test_old_shards_without_flags_or_metric_table_still_reduce(tmp_path):
    """Shards of the first schema (no censoring columns, no metric table in the metadata)."""
    sweep = make_sweep(tmp_path / "s", [JobSpec("real", 30), JobSpec("random", 30, flat=0.3)])
    for path in sweep.glob("*/shard-*.parquet"):
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"sensdir"])
        for key in ("metrics", "direction", "site", "thresholds"):
            meta.pop(key, None)
        table = table.drop([c for c in table.column_names if c.endswith("_censored")])
        table = table.replace_schema_metadata({b"sensdir": json.dumps(meta).encode()})
        pq.write_table(table, path)
        manifest = path.with_name(path.name.replace(".parquet", ".manifest.json"))
        man = json.loads(manifest.read_text())
        for key in ("parquet_sha256", "parquet_bytes"):
            man.pop(key, None)
        manifest.write_text(json.dumps(man))
    res = reduce_sweep(sweep, tmp_path / "out", wandb="disabled", n_bootstrap=20, progress=False)
    t = pq.read_table(res.table_parquet)
    frac = lookup(t, direction="random", metric="ms_step_kl", statistic="censored_fraction")
    assert frac and frac[0]["value"] > 0  # derived from the step values for old shards
    assert lookup(t, direction="real", metric="ms_step_kl", statistic="mean")


# ------------------------------------------------------------------------------ jobs and settings
def test_job_writes_censoring_flags_thresholds_and_the_real_hook(tiny_cfg, tmp_path):
    cfg = with_(tiny_cfg, site={"hook": None})
    res = run_job(cfg)
    table = pq.read_table(res.shard_path)
    for col in ("ms_step_kl_censored", "ms_step_l2_censored", "plateau_len_censored"):
        assert table.schema.field(col).type == pa.bool_()
    rows = table.to_pylist()
    assert all(r["ms_step_kl_censored"] == (r["ms_step_kl"] == r["n_valid_steps"] - 1) for r in rows)
    meta = json.loads(table.schema.metadata[b"sensdir"])
    assert meta["site"]["hook"] == "blocks.1.hook_resid_pre"  # the SAE's hook, resolved
    assert meta["thresholds"]["median_final_norm"] > 0 and meta["thresholds"]["plateau_l2"] == tiny_cfg.metric.plateau_l2
    out = reduce_sweep(res.job_dir.parent, tmp_path / "r", wandb="disabled", n_bootstrap=10, progress=False)
    hooks = {r["hook"] for r in pq.read_table(out.table_parquet).to_pylist() if r["section"] == "summary"}
    assert hooks == {"blocks.1.hook_resid_pre"}


@pytest.mark.parametrize(
    "section, change, message",
    [
        ("direction", {"anchor_cos": 2.0}, r"direction.anchor_cos=2.0 is out of range: it must be <= 1"),
        ("metric", {"ms_threshold": float("nan")}, r"metric.ms_threshold=nan is not a finite number"),
        ("metric", {"plateau_l2": 0.0}, r"metric.plateau_l2=0.0 is out of range: it must be > 0"),
        ("stats", {"cov_eps": float("inf")}, r"stats.cov_eps=inf is not a finite number"),
        ("data", {"n_prompts": 0}, r"data.n_prompts=0 is out of range: it must be >= 1"),
        ("engine", {"logits_mb": -1.0}, r"engine.logits_mb=-1.0 is out of range"),
    ],
)
def test_settings_outside_their_domain_are_refused_at_startup(tiny_cfg, section, change, message):
    from sensdir.directions.synth_struct import SynthStructConfig

    cfg = with_(with_(tiny_cfg, direction=SynthStructConfig()), **{section: change})
    with pytest.raises(ConfigError, match=message):
        validate_walks(cfg)


@pytest.mark.slow
def test_cli_refuses_an_out_of_range_setting_with_one_line(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "sensdir.run", "direction=synth_struct", "direction.anchor_cos=2", f"run.out_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("sensdir: error:")]
    assert len(errors) == 1 and "direction.anchor_cos=2.0 is out of range" in errors[0]
    assert "Traceback" not in res.stderr and not list(tmp_path.rglob("*.parquet"))


# ------------------------------------------------------------------------- batch-size independence
@pytest.mark.slow
def test_quickstart_summaries_and_targets_do_not_depend_on_the_batch_size(tmp_path):
    """The quickstart preset (fewer prompts): integer summaries and targets identical for
    engine.batch_size 1, 7, 100 and the default."""
    from hydra import compose, initialize_config_dir

    from sensdir.config import register_configs, to_config

    register_configs()
    keep = ["ms_step_kl", "ms_step_l2", "ms_step_kl_censored", "plateau_len", "target_norm", "source_index"]
    keep += ["anchor_latent", "top_latent", "anchor_cos", "target_l0"]
    seen: dict[str, dict] = {}
    for batch in (None, 1, 7, 100):
        for direction in ("real", "random", "synth_struct"):
            overrides = [
                "experiment=quickstart",
                f"direction={direction}",
                "data.n_prompts=40",
                f"run.out_dir={tmp_path / str(batch)}",
            ]
            overrides += ["run.progress=false"] + ([f"engine.batch_size={batch}"] if batch else [])
            with initialize_config_dir(config_dir=str(ROOT / "sensdir" / "conf"), version_base=None):
                cfg = to_config(compose("config", overrides=overrides))
            table = pq.read_table(run_job(cfg).shard_path)
            got = {c: table.column(c).to_pylist() for c in keep if c in table.column_names}
            if direction in seen:
                for c, v in got.items():
                    assert v == seen[direction][c], f"{direction}: {c} differs with engine.batch_size={batch}"
            else:
                seen[direction] = got


def test_norm_matched_synthetic_targets_take_a_real_activations_norm(tiny_cfg):
    from sensdir.directions.synth_struct import SynthStructConfig

    plain = pq.read_table(run_job(with_(tiny_cfg, direction=SynthStructConfig())).shard_path).to_pylist()
    res = run_job(with_(tiny_cfg, direction=SynthStructConfig(match_norm=True)))
    matched = pq.read_table(res.shard_path).to_pylist()
    assert res.job_dir.name.startswith("synth_struct+norm-") and {r["direction"] for r in matched} == {"synth_struct+norm"}
    # same construction (anchor, L0), only the length changes: to the drawn pool row's norm
    assert [r["anchor_latent"] for r in matched] == [r["anchor_latent"] for r in plain]
    assert [r["unmatched_target_norm"] for r in matched] == pytest.approx([r["target_norm"] for r in plain], rel=1e-5)
    # the norms are those of real activations: real's targets are pool rows, by source_index
    real = pq.read_table(run_job(tiny_cfg).shard_path).to_pylist()
    pool_norm = {r["source_index"]: r["target_norm"] for r in real}
    shared = [r for r in matched if r["norm_source_index"] in pool_norm]
    assert shared and all(r["target_norm"] == pytest.approx(pool_norm[r["norm_source_index"]], rel=1e-5) for r in shared)


# ------------------------------------------------------------------------ plateau diagnostics (§10)
def test_plateau_index_and_l2_curvature_on_hand_made_walks(tmp_path):
    """Random walks whose KL is exactly 4x the real walk's from the same base prompt: plateau
    index 0.25 at every t. L2 of the real walks grows as step^2 (curvature 2), of the random
    walks linearly (curvature 1)."""
    from helpers import reseal

    sweep = make_sweep(tmp_path / "s", [JobSpec("real", 40), JobSpec("random", 40)])
    paths = {p.parent.name.split("-")[0]: p for p in sweep.glob("*/shard-*.parquet")}
    real = pq.read_table(paths["real"])
    steps = np.arange(100, dtype=np.float32)
    for name, kl_scale, l2 in (("real", 1.0, steps**2), ("random", 4.0, steps)):
        t = pq.read_table(paths[name])
        kl = pa.array([[kl_scale * v for v in row] for row in real.column("kl").to_pylist()], pa.list_(pa.float32()))
        l2_col = pa.array([l2.tolist()] * t.num_rows, pa.list_(pa.float32()))
        t = t.set_column(t.schema.get_field_index("kl"), t.schema.field("kl"), kl)
        t = t.set_column(t.schema.get_field_index("l2"), t.schema.field("l2"), l2_col)
        pq.write_table(t, paths[name])
        reseal(paths[name])
    res = reduce_sweep(sweep, tmp_path / "out", wandb="disabled", n_bootstrap=10, progress=False)
    table = pq.read_table(res.table_parquet)
    index = lookup(table, section="diagnostics", metric="plateau_index")
    assert sorted(r["x"] for r in index) == [0.1, 0.2, 0.3]
    assert all(r["value"] == pytest.approx(0.25, rel=1e-5) and r["n"] == 40 for r in index)
    curv = {r["direction"]: r["value"] for r in lookup(table, section="diagnostics", metric="l2_curvature")}
    assert curv["real"] == pytest.approx(2.0) and curv["random"] == pytest.approx(1.0)
    assert "Does this model show plateaus?" in res.html.read_text()


def test_reduce_writes_saebench_layout_summaries_per_sae(tmp_path):
    """One JSON per SAE in SAEBench's results layout, metrics as category -> name -> number."""
    sae_b = {"source": "embedded", "release": "embedded", "sae_id": "blocks.1.hook_resid_pre/topk-16"}
    sweep = make_sweep(tmp_path / "s", [JobSpec("real", 30), JobSpec("random", 30), JobSpec("real", 20, sae=sae_b)])
    reduce_sweep(sweep, tmp_path / "out", wandb="disabled", n_bootstrap=10, progress=False)
    files = sorted((tmp_path / "out" / "saebench").glob("*/*_eval_results.json"))
    assert [f.name for f in files] == [
        "embedded_blocks.1.hook_resid_pre_l1-mid_eval_results.json",
        "embedded_blocks.1.hook_resid_pre_topk-16_eval_results.json",
    ]
    rec = json.loads(files[0].read_text())
    keys = {"eval_type_id", "eval_config", "eval_id", "datetime_epoch_millis", "eval_result_metrics", "eval_result_details"}
    assert keys | {"eval_result_unstructured", "sae_lens_id", "sae_lens_release_id", "sae_lens_version"} <= set(rec)
    assert rec["sae_lens_id"] == "blocks.1.hook_resid_pre/l1-mid" and rec["sae_lens_release_id"] == "embedded"
    metrics = rec["eval_result_metrics"]
    assert all(isinstance(v, float) for cat in metrics.values() for v in cat.values())
    assert "random_ks_vs_real" in metrics["ms_step_kl"] and {d["direction"] for d in rec["eval_result_details"]} == {
        "real",
        "random",
    }
