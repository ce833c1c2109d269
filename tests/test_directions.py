"""Direction types of METHODS §3 that return targets: each test states and checks a defining
property on a small real sae_lens SAE with synthetic site statistics."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from helpers import build_direction, make_direction_context, make_direction_sae, make_stats, propose, random_bases
from sensdir.directions import DIRECTIONS
from sensdir.walk_types import DirectionContext

D_IN, D_SAE, N_POOL, N_BASE = 16, 64, 50, 8
TARGET_TYPES = ["real", "random", "isotropic", "synth_baseline", "synth_struct", "sae_recon"]
RANDOMISED = ["real", "random", "isotropic", "synth_baseline", "sae_recon"]


@pytest.fixture(scope="module")
def ctx() -> DirectionContext:
    """Unit decoder rows, 10 dead latents in the stats; latents 0..9 are dead, so some of them
    fire on the bases and must move away."""
    sae = make_direction_sae(D_IN, D_SAE, seed=1)
    return make_direction_context(sae, make_stats(D_IN, D_SAE, seed=2, n_dead=10), N_POOL, seed=3)


@pytest.fixture(scope="module")
def base_BD() -> torch.Tensor:
    return random_bases(N_BASE, D_IN, seed=4)


def freq_neighbours(freq: list[float], i: int, excluded: set[int], k: int) -> list[int]:
    """Reference: the k latents nearest to i by |freq_j - freq_i|, ties by index."""
    cands = [j for j in range(len(freq)) if j != i and j not in excluded]
    return sorted(cands, key=lambda j: (abs(freq[j] - freq[i]), j))[:k]


def test_setup_has_active_and_dead_latents(ctx, base_BD):
    """The fixture exercises what the synthetic types must handle: several active latents per
    base, and active latents that are dead in the stats."""
    f_BS = ctx.sae.encode(base_BD)
    l0_B = (f_BS > 0).sum(-1)
    assert (l0_B >= 2).all() and (l0_B <= 20).all()
    assert (f_BS[:, ctx.stats.dead_S] > 0).any()


@pytest.mark.parametrize("name", TARGET_TYPES)
def test_registered_and_builds(name, ctx, base_BD):
    """Every type is listed, builds from its default config, and returns one target per base
    (no unit direction) on ctx.device, with per-row info of length B."""
    assert name in DIRECTIONS.names()
    entry = DIRECTIONS.get(name)
    cfg = entry.config_cls()
    assert cfg.name == name
    direction = DIRECTIONS.build(cfg, ctx)
    assert direction.returns == "target"
    p = direction.propose(base_BD, torch.arange(N_BASE), torch.Generator().manual_seed(0))
    assert p.unit_BD is None and p.target_BD.shape == base_BD.shape
    assert p.target_BD.dtype == base_BD.dtype and p.target_BD.device == ctx.device
    assert torch.isfinite(p.target_BD).all()
    assert "target_norm" in p.info
    for key, value in p.info.items():
        assert len(value) == N_BASE, key
    torch.testing.assert_close(p.info["target_norm"], p.target_BD.norm(dim=-1))


def test_real_targets_are_pool_rows(ctx, base_BD):
    """real: each target is the pool row named by source_index."""
    p = propose("real", ctx, base_BD)
    src_B = p.info["source_index"]
    assert ((src_B >= 0) & (src_B < N_POOL)).all()
    assert torch.equal(p.target_BD, ctx.pool_PD[src_B])


def test_sae_recon_is_reconstruction_of_pool_row(ctx, base_BD):
    """sae_recon: target = decode(encode(pool row)); target_l0 is that code's L0."""
    p = propose("sae_recon", ctx, base_BD)
    b_BD = ctx.pool_PD[p.info["source_index"]]
    with torch.no_grad():
        f_BS = ctx.sae.encode(b_BD)
        torch.testing.assert_close(p.target_BD, ctx.sae.decode(f_BS))
    assert torch.equal(p.info["target_l0"], (f_BS != 0).sum(-1))


def test_random_matches_mu_and_sigma(ctx):
    """random: T ~ N(mu, Sigma): empirical mean and covariance of many draws approach them."""
    n = 20000
    t_ND = propose("random", ctx, torch.zeros(n, D_IN)).target_BD.double()
    mu_D, cov_DD = ctx.stats.mu_D.double(), ctx.stats.cov_DD.double()
    assert (t_ND.mean(0) - mu_D).abs().max() < 0.05
    assert (torch.cov(t_ND.T) - cov_DD).abs().max() < 0.05


def test_isotropic_norm_and_spread(ctx):
    """isotropic: every target has norm median_norm; directions are uniform on the sphere
    (mean ~ 0, second moment ~ I/d)."""
    n = 20000
    t_ND = propose("isotropic", ctx, torch.zeros(n, D_IN)).target_BD.double()
    norm_N = t_ND.norm(dim=-1)
    torch.testing.assert_close(norm_N, torch.full_like(norm_N, ctx.stats.median_norm))
    u_ND = t_ND / norm_N[:, None]
    assert u_ND.mean(0).norm() < 0.05
    assert (u_ND.T @ u_ND / n - torch.eye(D_IN, dtype=torch.float64) / D_IN).abs().max() < 0.01


def test_synth_baseline_bag_of_latents(ctx, base_BD):
    """synth_baseline: L0 and the multiset of nonzero values are kept; no dead latent is used;
    each latent i moves (in index order) to one of the n_neighbours latents nearest to i in
    frequency among those not yet chosen; T == decode(f')."""
    direction = build_direction("synth_baseline", ctx)
    with torch.no_grad():
        f_BS = ctx.sae.encode(base_BD)
    codes = direction.synthesize(f_BS, torch.Generator().manual_seed(0))
    freq = ctx.stats.firing_freq_S.double().tolist()
    dead = set(torch.nonzero(ctx.stats.dead_S).squeeze(1).tolist())
    for b in range(N_BASE):
        f_S, g_S = f_BS[b], codes.f_new_BS[b]
        assert int((g_S != 0).sum()) == int((f_S != 0).sum())
        assert Counter(f_S[f_S != 0].tolist()) == Counter(g_S[g_S != 0].tolist())
        assert not (set(torch.nonzero(g_S).squeeze(1).tolist()) & dead)
        moves = codes.moves[b]
        assert [i for i, _ in moves] == torch.nonzero(f_S).squeeze(1).tolist()  # index order
        chosen: set[int] = set()
        for i, j in moves:
            assert j in freq_neighbours(freq, i, dead | chosen, 10)
            assert g_S[j] == f_S[i]
            chosen.add(j)
    p = propose("synth_baseline", ctx, base_BD, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(p.target_BD, ctx.sae.decode(codes.f_new_BS))
    assert torch.equal(p.info["target_l0"], p.info["base_l0"])
    assert torch.equal(p.info["base_l0"], (f_BS != 0).sum(-1))


def test_synth_baseline_draws_uniformly_among_neighbours(ctx):
    """synth_baseline: over many draws, a single active latent lands on each of its 10
    frequency neighbours, and on nothing else."""
    direction = build_direction("synth_baseline", ctx)
    i = 20
    f_1S = torch.zeros(1, D_SAE)
    f_1S[0, i] = 1.5
    gen = torch.Generator().manual_seed(0)
    dests = Counter(direction.synthesize(f_1S, gen).moves[0][0][1] for _ in range(2000))
    dead = set(torch.nonzero(ctx.stats.dead_S).squeeze(1).tolist())
    assert set(dests) == set(freq_neighbours(ctx.stats.firing_freq_S.double().tolist(), i, dead, 10))
    assert min(dests.values()) > 120  # expected 200 each


def test_synth_baseline_fewer_candidates_than_neighbours(ctx):
    """synth_baseline: with n_neighbours larger than the live latents, every move still lands
    on a distinct live latent (all remaining candidates are used)."""
    direction = build_direction("synth_baseline", ctx, n_neighbours=1000)
    alive = torch.nonzero(~ctx.stats.dead_S).squeeze(1)
    f_1S = torch.zeros(1, D_SAE)
    f_1S[0, alive[:30]] = torch.arange(1, 31).float()
    codes = direction.synthesize(f_1S, torch.Generator().manual_seed(0))
    dests = [j for _, j in codes.moves[0]]
    assert len(set(dests)) == 30 and not ctx.stats.dead_S[dests].any()


@pytest.mark.parametrize("n_anchor_candidates", [100, 8])
def test_synth_struct(ctx, base_BD, n_anchor_candidates):
    """synth_struct: t = argmax f maps to the anchor c; c is, among the n_anchor_candidates
    latents nearest to t in frequency (not t, not dead), the one whose decoder cosine with t is
    closest to 0.42; every other latent goes (by decreasing value) to the unused live latent j
    with cos(c, j) closest to cos(t, i); L0 and values are kept; T == decode(f')."""
    direction = build_direction("synth_struct", ctx, n_anchor_candidates=n_anchor_candidates)
    with torch.no_grad():
        f_BS = ctx.sae.encode(base_BD)
        w_SD = ctx.sae.W_dec / ctx.sae.W_dec.norm(dim=-1, keepdim=True)
        cos_SS = (w_SD @ w_SD.T).double()
    codes = direction.synthesize(f_BS)
    p = propose("synth_struct", ctx, base_BD, n_anchor_candidates=n_anchor_candidates)
    freq = ctx.stats.firing_freq_S.double().tolist()
    dead = set(torch.nonzero(ctx.stats.dead_S).squeeze(1).tolist())
    for b in range(N_BASE):
        f_S, g_S = f_BS[b], codes.f_new_BS[b]
        t = int(f_S.argmax())
        cands = freq_neighbours(freq, t, dead, n_anchor_candidates)
        c = min(cands, key=lambda j: abs(float(cos_SS[t, j]) - 0.42))
        assert int(p.info["top_latent"][b]) == t and int(p.info["anchor_latent"][b]) == c
        assert float(p.info["anchor_cos"][b]) == pytest.approx(float(cos_SS[t, c]), abs=1e-6)
        moves = codes.moves[b]
        assert moves[0] == (t, c)
        values = [float(f_S[i]) for i, _ in moves]
        assert values == sorted(values, reverse=True)
        used = set(dead)
        for i, j in moves:
            if i != t:
                gap = {k: abs(float(cos_SS[c, k] - cos_SS[t, i])) for k in range(D_SAE) if k not in used}
                assert gap[j] == pytest.approx(min(gap.values()), abs=1e-6)
            assert g_S[j] == f_S[i]
            used.add(j)
        assert Counter(f_S[f_S != 0].tolist()) == Counter(g_S[g_S != 0].tolist())
        assert not (set(torch.nonzero(g_S).squeeze(1).tolist()) & dead)
    with torch.no_grad():
        torch.testing.assert_close(p.target_BD, ctx.sae.decode(codes.f_new_BS))
    assert torch.equal(p.info["target_l0"], p.info["base_l0"])


def test_synthetic_with_no_active_latent_gives_decoder_bias(ctx):
    """synth_*: a base whose code is all zero has target decode(0) = b_dec."""
    base_1D = ctx.sae.b_dec.detach()[None].clone()  # encoder input 0: every pre-activation is -2
    assert int((ctx.sae.encode(base_1D) != 0).sum()) == 0
    for name in ("synth_baseline", "synth_struct"):
        p = propose(name, ctx, base_1D)
        torch.testing.assert_close(p.target_BD[0], ctx.sae.b_dec.detach())
        assert int(p.info["target_l0"][0]) == 0


@pytest.mark.parametrize("name", TARGET_TYPES)
def test_same_seed_same_targets(name, ctx, base_BD):
    """Randomness comes only from gen: the same seed gives identical targets and info."""
    p1, p2 = propose(name, ctx, base_BD, seed=7), propose(name, ctx, base_BD, seed=7)
    assert torch.equal(p1.target_BD, p2.target_BD)
    for key in p1.info:
        a, b = torch.as_tensor(p1.info[key]), torch.as_tensor(p2.info[key])
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", RANDOMISED)
def test_different_seed_different_targets(name, ctx, base_BD):
    """The random types draw from gen: another seed gives other targets."""
    p1, p2 = propose(name, ctx, base_BD, seed=7), propose(name, ctx, base_BD, seed=8)
    assert not torch.equal(p1.target_BD, p2.target_BD)


def test_synth_struct_draws_nothing(ctx, base_BD):
    """synth_struct is a deterministic function of the base (the spec draws nothing): any seed
    gives the same targets."""
    p1, p2 = propose("synth_struct", ctx, base_BD, seed=7), propose("synth_struct", ctx, base_BD, seed=8)
    assert torch.equal(p1.target_BD, p2.target_BD)


@pytest.mark.parametrize("name", TARGET_TYPES)
def test_works_under_inference_mode(name, ctx, base_BD):
    """The job calls propose under torch.inference_mode(): same targets as without it."""
    with torch.inference_mode():
        p1 = propose(name, ctx, base_BD, seed=3)
    p2 = propose(name, ctx, base_BD, seed=3)
    assert torch.equal(p1.target_BD, p2.target_BD)
