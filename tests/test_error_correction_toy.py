"""The toy model with known features through the whole path (METHODS §11 [FH26]): jobs of the
``error_correction`` direction type on ``model.source=toy_error_correction`` write shards, the
reduce fits p per source. Along the true features (the toy SAE's decoder rows) p is well above
2 (4 by construction), falls as the pair is rotated away from them, and is 2 for random pairs."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from sensdir.config import DataConfig, EngineConfig, MetricConfig, ModelConfig, RunConfig, SaeConfig, SensdirConfig
from sensdir.directions.error_correction import ErrorCorrectionConfig
from sensdir.job import run_job
from sensdir.reduce import reduce_sweep
from sensdir.schedules.lengths import LengthsConfig

ROTATIONS = (0.0, 30.0, 60.0, 90.0)
LENGTHS = tuple(round(0.1 * k, 1) for k in range(1, 41))  # 0.1 .. 4.0: the toy's scale


def _cfg(out, source: str, rotate: float) -> SensdirConfig:
    return SensdirConfig(
        model=ModelConfig(source="toy_error_correction", name="toy_error_correction"),
        sae=SaeConfig(source="toy_error_correction", release="toy", sae_id="blocks.0.hook_resid_pre"),
        data=DataConfig(n_prompts=40, n_stats=100, n_pool=20),
        direction=ErrorCorrectionConfig(source=source, rotate_deg=rotate),
        schedule=LengthsConfig(lengths=LENGTHS),
        metric=MetricConfig(names=("kl",)),
        engine=EngineConfig(compile=False),
        run=RunConfig(out_dir=str(out), name="toy", n_targets=7, progress=False),
    )


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_ec")
    for rot in ROTATIONS:
        run_job(_cfg(out, "sae", rot))
    run_job(_cfg(out, "random", 0.0))
    res = reduce_sweep(out / "toy", wandb="disabled", n_bootstrap=400, progress=False)
    rows = [r for r in pq.read_table(res.table_parquet).to_pylist() if r["section"] == "error_correction"]
    return res, rows


def _p(rows, direction: str, level: float) -> tuple[float, float, float]:
    got = {r["statistic"]: r["value"] for r in rows if r["direction"] == direction and r["x"] == level and r["metric"] == "p_fit"}
    return got["estimate"], got["ci95_low"], got["ci95_high"]


def _label(rot: float) -> str:
    return "error_correction:sae" + (f"@rot{rot:g}" if rot else "")


LEVELS = (0.1, 0.3, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
def test_true_features_have_p_above_2(toy_sweep, level):
    p, lo, hi = _p(toy_sweep[1], _label(0.0), level)
    assert lo > 2.0 and p > 3.0, (p, lo, hi)  # 4 by construction
    assert lo <= p <= hi


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
def test_p_falls_as_the_directions_rotate_away(toy_sweep, level):
    """Monotone within CIs: each rotation's p is at most the CI's upper end of the previous
    one, and the end points are apart (turned by 90 degrees, the pair is random)."""
    ps = [_p(toy_sweep[1], _label(r), level) for r in ROTATIONS]
    for (p0, _, hi0), (p1, lo1, _) in zip(ps, ps[1:]):
        assert p1 <= hi0 and lo1 <= p0, ps
    assert ps[-1][2] < ps[0][1], ps
    assert abs(ps[-1][0] - 2.0) < 0.3, ps


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
def test_random_pairs_have_p_near_2(toy_sweep, level):
    p, lo, hi = _p(toy_sweep[1], "error_correction:random", level)
    assert abs(p - 2.0) < 0.25 and lo < 2.15 and hi > 1.85, (p, lo, hi)


@pytest.mark.slow
def test_the_reduce_reports_p_per_source(toy_sweep):
    res, rows = toy_sweep
    assert "error_correction" in res.figures and res.figures["error_correction"].exists()
    html = res.html.read_text()
    assert "error_correction" in html and "p_fit_ci95" in html
    n = {r["direction"] for r in rows if r["metric"] == "p_closed_form" and r["statistic"] == "estimate"}
    assert n == {_label(r) for r in ROTATIONS} | {"error_correction:random"}
    censored = [r["value"] for r in rows if r["metric"] == "censored_fraction"]
    assert max(censored) < 0.2
