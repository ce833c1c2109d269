"""sae.source=none: the plateau check (real and random walks) on a model that has no SAE."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from helpers import with_
from sensdir.config import SaeConfig, SiteConfig
from sensdir.directions.plateau import PlateauConfig
from sensdir.directions.random import RandomConfig
from sensdir.directions.real_mixture import RealMixtureConfig
from sensdir.directions.synth_struct import SynthStructConfig
from sensdir.errors import ConfigError
from sensdir.job import run_job
from sensdir.reduce import reduce_sweep
from sensdir.schedules.absolute import AbsoluteConfig
from sensdir.validate import validate_walks

NONE = SaeConfig(source="none")


def test_real_and_random_walks_run_without_an_sae_and_reduce_to_a_plateau_index(tiny_cfg, tmp_path):
    for direction in (tiny_cfg.direction, RandomConfig()):
        run_job(with_(tiny_cfg, sae=NONE, direction=direction))
    shards = sorted((tmp_path / "results" / "t").glob("*/shard-*.parquet"))
    assert len(shards) == 2
    for s in shards:
        t = pq.read_table(s).to_pydict()
        assert set(t["sae_release"]) == {"none"} and set(t["sae_id"]) == {None}
        assert set(t["hook"]) == {"blocks.1.hook_resid_pre"}
    res = reduce_sweep(tmp_path / "results" / "t", wandb="disabled", n_bootstrap=10, progress=False)
    rows = [r for r in pq.read_table(res.out_dir / "stats.parquet").to_pylist() if r["metric"] == "plateau_index"]
    assert sorted(r["x"] for r in rows) == [0.1, 0.2, 0.3]
    assert all(r["sae"] == "none" and r["value"] > 0 and r["n"] == tiny_cfg.data.n_prompts for r in rows)
    assert not (res.out_dir / "saebench").exists()  # no SAE to file the results under


@pytest.mark.parametrize(
    "direction",
    [SynthStructConfig(), PlateauConfig(start="synth_struct"), RealMixtureConfig(natural_length="sae_error")],
    ids=["synth_struct", "plateau-from-synth", "real_mixture-sae-length"],
)
def test_types_that_read_the_sae_are_refused_at_startup(tiny_cfg, direction):
    with pytest.raises(ConfigError, match=r"reads the SAE.*sae.source=none.*need none: .*random.*real"):
        validate_walks(with_(tiny_cfg, sae=NONE, direction=direction))


def test_types_that_read_no_sae_pass_validation(tiny_cfg):
    for direction in (PlateauConfig(start="real"), RandomConfig()):
        validate_walks(with_(tiny_cfg, sae=NONE, direction=direction))
    validate_walks(with_(tiny_cfg, sae=NONE, direction=RealMixtureConfig(), schedule=AbsoluteConfig(n_steps=5)))


def test_no_sae_needs_a_site(tiny_cfg):
    with pytest.raises(ConfigError, match="sae.source=none: set site.hook"):
        run_job(with_(tiny_cfg, sae=NONE, site=SiteConfig(hook=None)))
