"""A new metric and a new direction type are one file each: declared here, in a test file alone,
they run through the job into the shard and through the reduce into its statistics table."""

from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
import torch

from helpers import with_
from sensdir.config import DirectionConfig, MetricConfig
from sensdir.directions import DIRECTIONS, Direction
from sensdir.errors import ConfigError
from sensdir.job import run_job
from sensdir.metrics import METRICS, Metric
from sensdir.metrics.summaries import max_slope
from sensdir.reduce import reduce_sweep
from sensdir.reduce.stats import lookup
from sensdir.walk_types import Proposal


@pytest.fixture
def toy_plugins(monkeypatch):
    """Register a toy metric and a toy direction type for this test only."""
    for registry in (METRICS, DIRECTIONS):
        registry.discover()  # the shipped plugins first, so that restoring the copy keeps them
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))

    @METRICS.register("toy_cos", MetricConfig)
    class ToyCosine(Metric):
        """1 - cos(final residual at step k, at step 0)."""

        name = "toy_cos"
        label = "cosine distance"
        summaries = (max_slope("toy_cos", "cosine distance"),)

        def curve(self, final_wKD, readout):
            f = final_wKD.float()
            return 1 - torch.nn.functional.cosine_similarity(f, f[:, :1].expand_as(f), dim=-1)

    @dataclass(frozen=True)
    class ToyConfig(DirectionConfig):
        name: str = "toy_double"
        scale: float = 2.0

    @DIRECTIONS.register("toy_double", ToyConfig)
    class ToyDouble(Direction):
        """Walk toward ``scale * A``."""

        returns = "target"
        info_columns = {"toy_scale": "float64"}  # its facts: a column in every shard from now on

        def propose(self, base_BD, base_index_B, gen):
            scale_B = torch.full((base_BD.shape[0],), self.cfg.scale)
            return Proposal(target_BD=base_BD * self.cfg.scale, info={"toy_scale": scale_B})

    return ToyConfig


def test_toy_metric_and_direction_reach_the_shard_and_the_reduce(tiny_cfg, toy_plugins, tmp_path):
    cfg = with_(tiny_cfg, direction=toy_plugins(), metric={"names": ("kl", "l2", "toy_cos")})
    res = run_job(cfg)
    table = pq.read_table(res.shard_path)
    assert {"toy_cos", "ms_step_toy_cos", "toy_scale", "kl", "ms_step_kl"} <= set(table.column_names)
    rows = table.to_pylist()
    assert all(r["direction"] == "toy_double" and r["toy_scale"] == 2.0 for r in rows)
    # scaling A keeps its direction at the site, yet the model's output moves
    assert all(abs(r["toy_cos"][0]) < 1e-6 and r["toy_cos"][-1] > 1e-4 for r in rows)

    out = reduce_sweep(res.job_dir.parent, tmp_path / "reduce", wandb="disabled", n_bootstrap=20, progress=False)
    stats = pq.read_table(out.table_parquet)
    mean = lookup(stats, section="summary", direction="toy_double", metric="ms_step_toy_cos", statistic="mean")
    assert len(mean) == 1 and mean[0]["n"] == len(rows)
    expected = sum(r["ms_step_toy_cos"] for r in rows) / len(rows)
    assert mean[0]["value"] == pytest.approx(expected)
    assert "ms_step" in out.figures


def test_unknown_metric_is_refused_before_any_compute(tiny_cfg):
    with pytest.raises(ConfigError, match="metric.names.*valid choices: kl, l2"):
        run_job(with_(tiny_cfg, metric={"names": ("kl", "kll")}))
