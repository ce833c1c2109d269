"""Unit-direction types of METHODS §3 ([LH24], [G24]): each test states and checks a defining
property on a small real sae_lens SAE with synthetic site statistics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from helpers import build_direction, make_direction_context, make_direction_sae, make_stats, propose, random_bases, with_
from sensdir.directions import DIRECTIONS
from sensdir.errors import ConfigError
from sensdir.schedules import SCHEDULES
from sensdir.schedules.lengths import LengthsConfig
from sensdir.schedules.relative import RelativeConfig
from sensdir.walk_types import DirectionContext

D_IN, D_SAE, N_POOL, N_BASE = 16, 64, 50, 8
N_DEAD = 10  # latents 0..9 never fire in the stats
UNIT_TYPES = {
    "cov_mixture": "direction",
    "real_mixture": "direction",
    "cov_itself": "direction",
    "real_itself": "direction",
    "sae_error": "scaled_direction",
    "eps_random": "scaled_direction",
    "sae_feature": "direction",
}
RANDOMISED = [n for n in UNIT_TYPES if n != "sae_error"]
CONF = str(Path(__file__).resolve().parent.parent / "sensdir" / "conf")


@pytest.fixture(scope="module")
def ctx() -> DirectionContext:
    """Decoder rows of unequal norms (so normalising matters), N_DEAD dead latents in the stats."""
    sae = make_direction_sae(D_IN, D_SAE, seed=11, decoder_norms=(0.5, 2.0))
    return make_direction_context(sae, make_stats(D_IN, D_SAE, seed=12, n_dead=N_DEAD), N_POOL, seed=13)


@pytest.fixture(scope="module")
def base_BD() -> torch.Tensor:
    return random_bases(N_BASE, D_IN, seed=14)


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def recon(ctx, x_BD: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ctx.sae.decode(ctx.sae.encode(x_BD))


def codes(ctx, x_BD: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ctx.sae.encode(x_BD)


def test_setup_has_every_latent_group(ctx, base_BD):
    """The fixture exercises every sae_feature group on every base: active latents, live latents
    inactive here, and dead latents (some of which fire on the bases)."""
    f_BS = codes(ctx, base_BD)
    active_BS = f_BS > 0
    assert (active_BS.sum(-1) >= 2).all()
    assert ((~active_BS) & ~ctx.stats.dead_S).sum(-1).min() > 10
    assert (active_BS[:, ctx.stats.dead_S]).any()


@pytest.mark.parametrize("name", sorted(UNIT_TYPES))
def test_registered_and_builds(name, ctx, base_BD):
    """Every type is listed, builds from its default config through DIRECTIONS.build, and
    returns one unit direction per base (norm 1, base dtype, ctx.device); the scaled types
    also give a natural length; info values are CPU tensors of length B."""
    assert name in DIRECTIONS.names()
    cfg = DIRECTIONS.get(name).config_cls()
    assert cfg.name == name
    direction = DIRECTIONS.build(cfg, ctx)
    assert direction.returns == UNIT_TYPES[name]
    for dtype in (torch.float32, torch.float64):
        base = base_BD.to(dtype)
        p = direction.propose(base, torch.arange(N_BASE), torch.Generator().manual_seed(0))
        assert p.target_BD is None and p.unit_BD.shape == base.shape
        assert p.unit_BD.dtype == dtype and p.unit_BD.device == ctx.device
        torch.testing.assert_close(p.unit_BD.norm(dim=-1), torch.ones(N_BASE, dtype=dtype))
        if UNIT_TYPES[name] == "scaled_direction":
            assert p.natural_length_B.shape == (N_BASE,) and p.natural_length_B.dtype == dtype
            assert p.natural_length_B.device == ctx.device and (p.natural_length_B > 0).all()
        else:
            assert p.natural_length_B is None
        for key, value in p.info.items():
            assert torch.is_tensor(value) and value.device.type == "cpu" and len(value) == N_BASE, key


# --------------------------------------------------------------------------- cov_mixture


def test_cov_mixture_ignores_the_base(ctx, base_BD):
    """cov_mixture never uses A: the same generator state gives the same directions for any
    bases (and for shuffled bases)."""
    p1 = propose("cov_mixture", ctx, base_BD, seed=5)
    p2 = propose("cov_mixture", ctx, -3.0 * base_BD.flip(0) + 1.0, seed=5)
    assert torch.equal(p1.unit_BD, p2.unit_BD)
    assert torch.equal(p1.info["diff_norm"], p2.info["diff_norm"])


def test_cov_mixture_is_the_difference_of_two_gaussian_draws(ctx, base_BD):
    """cov_mixture: u = (s1 - s2) / ||s1 - s2|| with s1, s2 the first and second B draws of
    N(mu, Sigma) from gen."""
    s_2BD = ctx.stats.sample_gaussian(2 * N_BASE, torch.Generator().manual_seed(5)).double()
    p = propose("cov_mixture", ctx, base_BD, seed=5)
    diff_BD = s_2BD[:N_BASE] - s_2BD[N_BASE:]
    torch.testing.assert_close(p.unit_BD, unit(diff_BD).float())
    torch.testing.assert_close(p.info["diff_norm"], diff_BD.norm(dim=-1).float())


def test_cov_mixture_covariance_is_twice_sigma(ctx):
    """cov_mixture: s1 - s2 = diff_norm * u ~ N(0, 2 Sigma): over many draws its mean is 0 and
    its covariance is 2 Sigma (proportional to Sigma, not isotropic)."""
    n = 20000
    p = propose("cov_mixture", ctx, torch.zeros(n, D_IN), seed=1)
    w_ND = p.info["diff_norm"].double()[:, None] * p.unit_BD.double()
    cov_DD = ctx.stats.cov_DD.double()
    assert w_ND.mean(0).abs().max() < 0.05
    assert (torch.cov(w_ND.T) - 2 * cov_DD).abs().max() < 0.1
    # the directions follow Sigma: their spread along Sigma's top eigenvector beats the bottom one
    evals, evecs = torch.linalg.eigh(cov_DD)
    proj = (p.unit_BD.double() @ evecs) ** 2
    assert proj[:, -1].mean() > 5 * proj[:, 0].mean()


def test_cov_mixture_optional_error_length(ctx, base_BD):
    """cov_mixture with natural_length="sae_error": same directions as without, plus the SAE
    error's length ||SAE(A) - A|| as natural length, which makes it a scaled direction that a
    relative walk takes to exactly that length."""
    p0 = propose("cov_mixture", ctx, base_BD, seed=2)
    p1 = propose("cov_mixture", ctx, base_BD, seed=2, natural_length="sae_error")
    assert torch.equal(p0.unit_BD, p1.unit_BD) and p0.natural_length_B is None
    torch.testing.assert_close(p1.natural_length_B, (recon(ctx, base_BD) - base_BD).norm(dim=-1))
    impl, cfg_cls = DIRECTIONS.get("cov_mixture").impl, DIRECTIONS.get("cov_mixture").config_cls
    assert impl.returns_for(cfg_cls()) == "direction"
    assert impl.returns_for(cfg_cls(natural_length="sae_error")) == "scaled_direction"
    from sensdir.schedules import SCHEDULES
    from sensdir.schedules.relative import RelativeConfig

    walk = SCHEDULES.build(RelativeConfig(n_steps=3)).walk(base_BD, p1)
    torch.testing.assert_close((walk.acts_BKD[:, -1] - base_BD).norm(dim=-1), p1.natural_length_B)
    with pytest.raises(ConfigError, match="none, sae_error"):
        DIRECTIONS.get("cov_mixture").config_cls(natural_length="bogus")


# --------------------------------------------------------------------------- real_mixture


def test_real_mixture_is_normalised_difference_of_two_distinct_pool_rows(ctx, base_BD):
    """real_mixture: u = (a_i - a_j) / ||a_i - a_j|| for the pool rows i != j it reports, and it
    ignores the base."""
    p = propose("real_mixture", ctx, base_BD, seed=3)
    i_B, j_B = p.info["source_index"], p.info["source_index_2"]
    assert (i_B != j_B).all() and ((i_B >= 0) & (i_B < N_POOL) & (j_B >= 0) & (j_B < N_POOL)).all()
    diff_BD = ctx.pool_PD[i_B].double() - ctx.pool_PD[j_B].double()
    torch.testing.assert_close(p.unit_BD, unit(diff_BD).float())
    torch.testing.assert_close(p.info["diff_norm"], diff_BD.norm(dim=-1).float())
    assert torch.equal(p.unit_BD, propose("real_mixture", ctx, base_BD + 1.0, seed=3).unit_BD)


def test_real_mixture_pairs_are_uniform_over_distinct_rows(ctx):
    """real_mixture: with a pool of 3 rows, each of the 6 ordered pairs of distinct rows is
    drawn about equally often, and no pair repeats a row."""
    small = DirectionContext(sae=ctx.sae, stats=ctx.stats, pool_PD=ctx.pool_PD[:3])
    n = 6000
    p = propose("real_mixture", small, torch.zeros(n, D_IN), seed=0)
    pairs = Counter(zip(p.info["source_index"].tolist(), p.info["source_index_2"].tolist()))
    assert set(pairs) == {(i, j) for i in range(3) for j in range(3) if i != j}
    assert min(pairs.values()) > 850  # expected 1000 each


def test_real_mixture_needs_two_pool_rows(ctx):
    """real_mixture with fewer than two pool activations is refused when built."""
    tiny = DirectionContext(sae=ctx.sae, stats=ctx.stats, pool_PD=ctx.pool_PD[:1])
    with pytest.raises(ConfigError, match="n_pool"):
        build_direction("real_mixture", tiny)


# --------------------------------------------------------------------------- *_itself


def test_cov_itself_points_from_a_to_a_gaussian_draw(ctx, base_BD):
    """cov_itself: u = (s - A) / ||s - A|| with s the gen's N(mu, Sigma) draw, so
    A + diff_norm * u = s."""
    s_BD = ctx.stats.sample_gaussian(N_BASE, torch.Generator().manual_seed(4)).double()
    p = propose("cov_itself", ctx, base_BD, seed=4)
    torch.testing.assert_close(p.unit_BD, unit(s_BD - base_BD.double()).float())
    reached = base_BD.double() + p.info["diff_norm"].double()[:, None] * p.unit_BD.double()
    torch.testing.assert_close(reached, s_BD, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p.info["target_norm"], s_BD.norm(dim=-1).float())


def test_real_itself_points_from_a_to_a_pool_row(ctx, base_BD):
    """real_itself: u = (B - A) / ||B - A|| for the pool row B it reports, so
    A + diff_norm * u = B."""
    p = propose("real_itself", ctx, base_BD, seed=4)
    b_BD = ctx.pool_PD[p.info["source_index"]].double()
    torch.testing.assert_close(p.unit_BD, unit(b_BD - base_BD.double()).float())
    reached = base_BD.double() + p.info["diff_norm"].double()[:, None] * p.unit_BD.double()
    torch.testing.assert_close(reached, b_BD, atol=1e-5, rtol=1e-5)


def test_itself_of_the_pool_row_itself_is_zero(ctx):
    """real_itself: a base equal to the drawn pool row has no direction: u = 0, diff_norm 0."""
    small = DirectionContext(sae=ctx.sae, stats=ctx.stats, pool_PD=ctx.pool_PD[:1])
    p = propose("real_itself", small, ctx.pool_PD[:1].clone())
    assert torch.equal(p.unit_BD, torch.zeros(1, D_IN)) and float(p.info["diff_norm"][0]) == 0.0


# --------------------------------------------------------------------------- sae_error


def test_sae_error_relative_walk_ends_at_the_reconstruction(ctx, base_BD):
    """sae_error: natural length = ||SAE(A) - A||, u = (SAE(A) - A) / ||.||, so the relative walk
    goes from A to exactly SAE(A) (float rounding aside) and the lengths walk goes along u."""
    p = propose("sae_error", ctx, base_BD)
    r_BD = recon(ctx, base_BD)
    torch.testing.assert_close(p.natural_length_B, (r_BD - base_BD).norm(dim=-1))
    torch.testing.assert_close(p.info["error_norm"], p.natural_length_B)
    torch.testing.assert_close(p.unit_BD, unit(r_BD - base_BD))
    assert torch.equal(p.info["base_l0"], (codes(ctx, base_BD) != 0).sum(-1))
    walk = SCHEDULES.build(RelativeConfig(n_steps=7)).walk(base_BD, p)
    assert torch.equal(walk.acts_BKD[:, 0], base_BD)
    torch.testing.assert_close(walk.acts_BKD[:, -1], r_BD, atol=1e-5, rtol=1e-5)
    lw = SCHEDULES.build(LengthsConfig(lengths=(0.5, 2.0))).walk(base_BD, p)
    torch.testing.assert_close(lw.acts_BKD[:, 2], base_BD + 2.0 * p.unit_BD)


def test_sae_error_draws_nothing(ctx, base_BD):
    """sae_error is a function of the base: any seed gives the same proposal."""
    p1, p2 = propose("sae_error", ctx, base_BD, seed=1), propose("sae_error", ctx, base_BD, seed=2)
    assert torch.equal(p1.unit_BD, p2.unit_BD) and torch.equal(p1.natural_length_B, p2.natural_length_B)


# --------------------------------------------------------------------------- eps_random


def test_eps_random_has_the_error_length_and_a_random_direction(ctx, base_BD):
    """eps_random: natural length exactly sae_error's ||SAE(A) - A||; the direction is the
    normalised N(0, I) draw of gen and does not depend on A."""
    p = propose("eps_random", ctx, base_BD, seed=6)
    err = propose("sae_error", ctx, base_BD)
    assert torch.equal(p.natural_length_B, err.natural_length_B)
    assert torch.equal(p.info["error_norm"], err.info["error_norm"])
    g_BD = torch.randn(N_BASE, D_IN, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(p.unit_BD, unit(g_BD).float())
    assert torch.equal(p.unit_BD, propose("eps_random", ctx, 2 * base_BD, seed=6).unit_BD)
    walk = SCHEDULES.build(RelativeConfig(n_steps=5)).walk(base_BD, p)
    torch.testing.assert_close((walk.acts_BKD[:, -1] - base_BD).norm(dim=-1), err.natural_length_B)


def test_eps_random_is_isotropic(ctx):
    """eps_random: directions are uniform on the sphere (mean ~ 0, second moment ~ I/d)."""
    n = 20000
    u_ND = propose("eps_random", ctx, torch.zeros(n, D_IN), seed=0).unit_BD.double()
    assert u_ND.mean(0).norm() < 0.05
    assert (u_ND.T @ u_ND / n - torch.eye(D_IN, dtype=torch.float64) / D_IN).abs().max() < 0.01


# --------------------------------------------------------------------------- sae_feature


def _latent_groups(ctx, base_1D):
    f_S = codes(ctx, base_1D)[0]
    dead = ctx.stats.dead_S
    return {
        "active": set(torch.nonzero(f_S > 0).squeeze(1).tolist()),
        "alive": set(torch.nonzero(~dead & (f_S == 0)).squeeze(1).tolist()),
        "dead": set(torch.nonzero(dead).squeeze(1).tolist()),
    }


@pytest.mark.parametrize("group", ["active", "alive", "dead"])
def test_sae_feature_picks_from_its_group(group, ctx, base_BD):
    """sae_feature: `active` picks only latents active on that prompt, `alive` only latents
    alive in the data but inactive here, `dead` only dead latents; u is the normalised decoder
    row of the reported latent; latent_freq / latent_act are its frequency and f_j(A)."""
    p = propose("sae_feature", ctx, base_BD, seed=0, group=group)
    f_BS = codes(ctx, base_BD)
    w_SD = ctx.sae.W_dec.detach()
    for b in range(N_BASE):
        j = int(p.info["latent"][b])
        assert j in _latent_groups(ctx, base_BD[b : b + 1])[group]
        torch.testing.assert_close(p.unit_BD[b], w_SD[j] / w_SD[j].norm())
        assert float(p.info["latent_freq"][b]) == float(ctx.stats.firing_freq_S[j])
        assert float(p.info["latent_act"][b]) == float(f_BS[b, j].clamp(min=0))
        if group == "active":
            assert float(p.info["latent_act"][b]) > 0
        if group == "alive":
            assert float(p.info["latent_act"][b]) == 0.0
    assert torch.equal(p.info["base_l0"], (f_BS != 0).sum(-1))


@pytest.mark.parametrize("group", ["active", "alive", "dead"])
def test_sae_feature_draws_uniformly_within_the_group(group, ctx, base_BD):
    """sae_feature: over many draws for one base, every latent of the group is drawn, about
    equally often, and nothing else."""
    base_1D = base_BD[:1]
    expected = _latent_groups(ctx, base_1D)[group]
    n = 300 * len(expected)
    p = propose("sae_feature", ctx, base_1D.expand(n, -1), seed=1, group=group)
    counts = Counter(p.info["latent"].tolist())
    assert set(counts) == expected
    assert min(counts.values()) > 200  # expected 300 each


def test_sae_feature_base_without_active_latent(ctx, base_BD):
    """sae_feature:active on a base with no active latent: that row is marked latent = -1 with
    u = 0 and NaN frequency/activation; the other rows keep their draws."""
    empty_1D = ctx.sae.b_dec.detach()[None].clone()  # encoder input 0: nothing fires
    assert int((codes(ctx, empty_1D) > 0).sum()) == 0
    mixed = torch.cat([base_BD[:2], empty_1D, base_BD[2:4]])
    p = propose("sae_feature", ctx, mixed, seed=0)
    ref = propose("sae_feature", ctx, torch.cat([base_BD[:2], base_BD[:1], base_BD[2:4]]), seed=0)
    assert int(p.info["latent"][2]) == -1
    assert torch.equal(p.unit_BD[2], torch.zeros(D_IN))
    assert p.info["latent_freq"][2].isnan() and p.info["latent_act"][2].isnan()
    keep = [0, 1, 3, 4]
    assert torch.equal(p.info["latent"][keep], ref.info["latent"][keep])
    assert torch.equal(p.unit_BD[keep], ref.unit_BD[keep])


def test_sae_feature_empty_group_is_refused_when_built(ctx):
    """sae_feature: group=dead with no dead latent in the stats (or alive with every latent
    dead) is refused when the type is built, naming the group."""
    for n_dead, group in ((0, "dead"), (D_SAE, "alive")):
        other = DirectionContext(sae=ctx.sae, stats=make_stats(D_IN, D_SAE, seed=12, n_dead=n_dead), pool_PD=ctx.pool_PD)
        with pytest.raises(ConfigError, match=f"group='{group}'"):
            build_direction("sae_feature", other, group=group)


def test_sae_feature_invalid_group_names_the_choices():
    """sae_feature: an unknown group fails when the config is built, listing the valid ones."""
    with pytest.raises(ConfigError, match="active, alive, dead"):
        DIRECTIONS.get("sae_feature").config_cls(group="live")


def test_sae_feature_group_through_hydra():
    """direction=sae_feature direction.group=dead composes; a bad group fails in to_config
    (before any job starts) with the ConfigError the entry point prints."""
    from hydra import compose, initialize_config_dir

    from sensdir.config import register_configs, to_config

    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = to_config(compose("config", overrides=["direction=sae_feature", "direction.group=dead"]))
        assert cfg.direction.group == "dead"
        bad = compose("config", overrides=["direction=sae_feature", "direction.group=nope"])
    with pytest.raises(ConfigError, match="valid choices"):
        to_config(bad)


# --------------------------------------------------------------------------- all types


@pytest.mark.parametrize("name", sorted(UNIT_TYPES))
def test_same_seed_same_directions(name, ctx, base_BD):
    """Randomness comes only from gen: the same seed gives identical directions and info."""
    p1, p2 = propose(name, ctx, base_BD, seed=7), propose(name, ctx, base_BD, seed=7)
    assert torch.equal(p1.unit_BD, p2.unit_BD)
    for key in p1.info:
        torch.testing.assert_close(p1.info[key], p2.info[key], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", RANDOMISED)
def test_different_seed_different_directions(name, ctx, base_BD):
    """The random types draw from gen: another seed gives other directions."""
    assert not torch.equal(propose(name, ctx, base_BD, seed=7).unit_BD, propose(name, ctx, base_BD, seed=8).unit_BD)


@pytest.mark.parametrize("name", sorted(UNIT_TYPES))
def test_works_under_inference_mode(name, ctx, base_BD):
    """The job calls propose under torch.inference_mode(): same directions as without it."""
    with torch.inference_mode():
        p1 = propose(name, ctx, base_BD, seed=3)
    assert torch.equal(p1.unit_BD, propose(name, ctx, base_BD, seed=3).unit_BD)


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    "direction, schedule",
    [("sae_error", RelativeConfig(n_steps=5)), ("sae_feature", LengthsConfig(preset="short"))],
)
def test_job_writes_the_info_columns(direction, schedule, tiny_cfg):
    """run_job on the tiny model: sae_error's natural length and sae_feature's latent columns
    reach the shard; step 0 is the clean run."""
    from sensdir.job import run_job

    cfg = with_(tiny_cfg, direction=DIRECTIONS.get(direction).config_cls(), schedule=schedule, data={"n_prompts": 4})
    rows = pq.read_table(run_job(cfg).shard_path).to_pylist()
    assert len(rows) == 4
    for r in rows:
        assert r["kl"][0] == 0.0 and r["l2"][0] == 0.0
        if direction == "sae_error":
            assert r["natural_length"] == pytest.approx(r["error_norm"], rel=1e-5) and r["natural_length"] > 0
        else:
            assert r["grid_kind"] == "length" and len(r["grid"]) == 30
            assert {"latent", "latent_freq", "latent_act", "base_l0"} <= set(r)
