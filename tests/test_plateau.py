"""plateau: walks start at X (another activation of the chosen kind) and go toward a fresh
Gaussian sample; the base activation only provides the context."""

import pytest
import torch

from helpers import make_direction_context, make_direction_sae, make_stats, with_
from sensdir.directions import DIRECTIONS
from sensdir.directions.plateau import PlateauConfig
from sensdir.errors import ConfigError
from sensdir.job import run_job
from sensdir.schedules import SCHEDULES
from sensdir.schedules.absolute import AbsoluteConfig


@pytest.fixture(scope="module")
def ctx():
    """The small SAE, stats and pool of test_directions.py."""
    return make_direction_context(make_direction_sae(16, 64, seed=1), make_stats(16, 64, seed=2, n_dead=10), 50, seed=3)


@pytest.mark.parametrize("start", ["real", "random", "synth_baseline", "synth_struct"])
def test_plateau_walk_starts_at_the_start_type_target(ctx, start):
    base = ctx.pool_PD[:4] + 0.1
    gen = torch.Generator().manual_seed(0)
    prop = DIRECTIONS.build(PlateauConfig(start=start), ctx).propose(base, torch.arange(4), gen)
    # the same generator state gives the start type's own target first
    gen2 = torch.Generator().manual_seed(0)
    entry = DIRECTIONS.get(start)
    own = entry.impl(entry.config_cls(), ctx).propose(base, torch.arange(4), gen2)
    torch.testing.assert_close(prop.start_BD, own.target_BD)
    walk = SCHEDULES.build(AbsoluteConfig(n_steps=5, step_size=0.1)).walk(base, prop)
    torch.testing.assert_close(walk.acts_BKD[:, 0], prop.start_BD)
    step = walk.acts_BKD[:, 1] - walk.acts_BKD[:, 0]
    expected = prop.target_BD - prop.start_BD
    cos = torch.nn.functional.cosine_similarity(step, expected, dim=-1)
    assert torch.allclose(cos, torch.ones(4), atol=1e-5)


def test_plateau_refuses_a_start_without_targets(ctx):
    with pytest.raises(ValueError, match="valid choices"):
        DIRECTIONS.build(PlateauConfig(start="cov_mixture"), ctx)


def test_plateau_job_reports_start_facts(tiny_cfg):
    cfg = with_(tiny_cfg, direction=PlateauConfig(start="random"), schedule=AbsoluteConfig(n_steps=30, step_size=0.5))
    res = run_job(cfg)
    import pyarrow.parquet as pq

    rows = pq.read_table(res.shard_path).to_pylist()
    assert all(r["start_norm"] > 0 and r["kl"][0] == 0 for r in rows)
    with pytest.raises(ConfigError, match="valid choices"):
        run_job(with_(cfg, direction=PlateauConfig(start="nope"), run={"out_dir": cfg.run.out_dir + "2"}))
