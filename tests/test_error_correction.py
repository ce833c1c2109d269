"""Feature-specific error correction [FH26], METHODS §11: the L^p fit on hand-made response
curves, the ``error_correction`` direction type's rows, the toy model with known features,
and the whole job -> shard -> reduce path on the toy model (p > 2 along true features, falling
toward 2 as they are rotated away, 2 for random pairs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import make_direction_context, make_direction_sae, make_stats, random_bases, with_
from sensdir.directions.error_correction import ErrorCorrection, ErrorCorrectionConfig
from sensdir.errors import ConfigError
from sensdir.reduce.ec_fit import AngleRows, estimate_p, lengths_to_levels, p_from_log2_ratio
from sensdir.schedules.lengths import DEFAULT_LENGTHS, SHORT_LENGTHS, LengthsConfig

ANGLES = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0)
D_IN, D_SAE = 16, 64

# ----------------------------------------------------------------------------- the fit


def hand_made(p: float, response, grid: tuple[float, ...], n: int, seed: int, iso: bool = False, x03: float = 2.05) -> AngleRows:
    """Length to KL 0.3 per (row, angle) read off hand-made KL curves on ``grid``: KL =
    ``response(L ||(cos t / s1, sin t / s2)||_p)`` with each row's own scales ``s1, s2``, set so
    that the pure walks reach 0.3 (``response(x03) = 0.3``) around the middle of the grid."""
    rng = np.random.default_rng(seed)
    g = np.array((0.0, *grid))
    scale = 0.4 * g[-1] / x03
    s1 = scale * rng.uniform(0.6, 1.4, n)
    s2 = s1.copy() if iso else scale * rng.uniform(0.6, 1.4, n)
    theta = np.radians(ANGLES)
    out = np.zeros((n, len(ANGLES)))
    for a, t in enumerate(theta):
        norm = ((abs(math.cos(t)) / s1) ** p + (abs(math.sin(t)) / s2) ** p) ** (1 / p)
        kl = response(g[None, :] * norm[:, None])
        out[:, a] = lengths_to_levels(np.broadcast_to(g, kl.shape), kl, (0.3,))[:, 0]
    return AngleRows(theta, out)


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0, 5.0])
@pytest.mark.parametrize(
    "response,grid,x03",
    [(lambda x: 0.05 * x**2.5, DEFAULT_LENGTHS, 2.05), (lambda x: 0.3 * np.expm1(x) ** 2, SHORT_LENGTHS, math.log(2))],
    ids=["power-law-default-lengths", "expm1-short-lengths"],
)
def test_fit_recovers_a_known_p_from_hand_made_curves(p, response, grid, x03):
    """The all-angle fit recovers p within 0.05, with unequal pure lengths per row, for a power
    law (which the interpolation reads exactly) and for a response that is none (read off
    the 29 steps of the short list); its bootstrap CI covers it (within the same 0.05)."""
    e = estimate_p(hand_made(p, response, grid, 150, seed=int(10 * p), x03=x03), 200, np.random.default_rng(0))
    assert e.n_rows == e.n_total == 150
    assert abs(e.p_fit - p) < 0.05, e
    assert e.p_fit_ci[0] - 0.05 < p < e.p_fit_ci[1] + 0.05


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0, 5.0])
def test_closed_form_is_exact_with_equal_pure_lengths_and_at_p2(p):
    """METHODS §11's 45-degree formula: exact when the two pure lengths are equal, and a
    quadratic response (p = 2) gives 2 whatever they are."""
    e = estimate_p(hand_made(p, lambda x: 0.05 * x**2.5, DEFAULT_LENGTHS, 80, seed=1, iso=True), 100, np.random.default_rng(0))
    assert abs(e.p_closed - p) < 0.05 and abs(e.log2_ratio45 - (0.5 - 1 / p)) < 0.01
    e2 = estimate_p(hand_made(2.0, lambda x: 0.05 * x**2.5, DEFAULT_LENGTHS, 80, seed=2), 100, np.random.default_rng(0))
    assert abs(e2.p_closed - 2.0) < 0.05


def test_quadratic_responses_give_2_despite_cross_terms():
    """A response that depends on ``L^2 u^T H u`` (a quadratic form; KL = expm1 of it here) along
    random orthonormal pairs: each 45-degree mixture picks up the cross term ``d1^T H d2``, whose
    sign varies. Pooled through ``L^-2`` both estimators give 2; a mean of per-row log ratios
    does not (log is concave), which is why the estimators pool that way."""
    rng = np.random.default_rng(6)
    q0, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    H = q0 @ np.diag(np.geomspace(0.01, 10, 24)) @ q0.T  # strongly anisotropic
    theta = np.radians(ANGLES)
    Q = np.linalg.qr(rng.normal(size=(2000, 24, 2)))[0]
    U = np.cos(theta)[None, :, None] * Q[:, None, :, 0] + np.sin(theta)[None, :, None] * Q[:, None, :, 1]
    length = np.sqrt(np.log1p(0.3) / np.einsum("rad,de,rae->ra", U, H, U))  # where KL reaches 0.3
    e = estimate_p(AngleRows(theta, length), 300, np.random.default_rng(0))
    for est, (lo, hi) in ((e.p_closed, e.p_closed_ci), (e.p_fit, e.p_fit_ci)):
        assert abs(est - 2.0) < 0.05 and lo < 2.0 < hi, e
    per_row = np.log2(length[:, 3]) + 0.5 * np.log2((length[:, 0] ** -2 + length[:, -1] ** -2) / 2)
    assert p_from_log2_ratio(float(per_row.mean())) > 2.08


def test_lengths_to_levels_interpolates_power_laws_exactly_and_censors():
    g = np.array([[0.0, 1.0, 3.0, 5.0, 9.0]] * 3)
    y = np.stack([0.01 * g[0] ** 3, 0.2 * g[0] ** 2, 0.001 * g[0]])
    got = lengths_to_levels(g, y, (0.1, 0.5))
    np.testing.assert_allclose(got[0], [10 ** (1 / 3), 50 ** (1 / 3)], rtol=1e-9)  # log-log, inside (1, 3) and (3, 5)
    np.testing.assert_allclose(got[1], [math.sqrt(0.5), math.sqrt(2.5)], rtol=1e-9)  # the first segment: KL ~ L^2
    assert np.isnan(got[2]).all()  # never reaches 0.1: censored


def test_closed_form_limits():
    assert p_from_log2_ratio(0.0) == pytest.approx(2.0)
    assert p_from_log2_ratio(0.25) == pytest.approx(4.0)
    assert p_from_log2_ratio(0.5) == 100.0 and p_from_log2_ratio(0.9) == 100.0  # beyond sqrt 2: as large as measurable


def test_rows_without_45_degrees_or_reaching_no_level_are_left_out():
    rows = hand_made(3.0, lambda x: 0.05 * x**2.5, DEFAULT_LENGTHS, 20, seed=3)
    rows.length_RA[:5, 3] = np.nan  # five rows never reach the level at 45 degrees
    e = estimate_p(rows, 50, np.random.default_rng(0))
    assert (e.n_rows, e.n_total) == (15, 20) and abs(e.p_fit - 3.0) < 0.05


# ----------------------------------------------------------------------------- the direction type


@pytest.fixture(scope="module")
def ctx():
    sae = make_direction_sae(D_IN, D_SAE, seed=21, decoder_norms=(0.5, 2.0))
    return make_direction_context(sae, make_stats(D_IN, D_SAE, seed=22, n_dead=4), 40, seed=23)


def _rows(direction, base_BD, n_rows_per_base: int, seed: int = 0, split: int | None = None):
    """Proposals for every (base, target) row, as the job makes them (rows of a base
    consecutive), optionally in two calls split at row ``split``."""
    B = base_BD.shape[0]
    bases = base_BD.double().repeat_interleave(n_rows_per_base, 0)  # float64: proposals come back in it
    idx = torch.arange(B).repeat_interleave(n_rows_per_base)
    tgt = torch.arange(n_rows_per_base).repeat(B)
    gen = torch.Generator().manual_seed(seed)
    cuts = [slice(0, len(idx))] if split is None else [slice(0, split), slice(split, len(idx))]
    props = [direction.propose_rows(bases[c], idx[c], tgt[c], gen) for c in cuts]
    u = torch.cat([p.unit_BD for p in props]).double()
    info = {
        k: [v for p in props for v in (p.info[k].tolist() if torch.is_tensor(p.info[k]) else p.info[k])] for k in props[0].info
    }
    return u, info


@pytest.mark.parametrize("source", ["sae", "sae_rare", "random", "pca"])
def test_rows_walk_pure_directions_and_their_mixtures(ctx, source):
    """Per (base, pair): u(0) = d1, u(90) = d2 orthogonalised against d1, u(theta) = cos d1 +
    sin d2'; every row is a unit vector, the pair is the same at every angle, and the
    rows say so (angle, pair index, d2_orthogonalised, d1_d2_cos)."""
    cfg = ErrorCorrectionConfig(source=source, n_pairs=2, max_cooccur=1.0, min_pool_rate=0.0)
    d = ErrorCorrection(cfg, ctx)
    base = random_bases(5, D_IN, seed=24)
    u, info = _rows(d, base, cfg.n_rows())
    ok = torch.tensor(info["pair_ok"])
    assert ok.sum() >= 5 * cfg.n_rows() // 2
    assert torch.allclose(u[ok].norm(dim=-1), torch.ones(int(ok.sum()), dtype=torch.float64))
    assert (u[~ok] == 0).all() and all(info["d2_orthogonalised"])
    u_bpaD = u.reshape(5, 2, len(ANGLES), D_IN)
    for b in range(5):
        for k in range(2):
            r = b * cfg.n_rows() + k * len(ANGLES)
            if not info["pair_ok"][r]:
                continue
            assert {info["d1_id"][r + a] for a in range(len(ANGLES))} == {info["d1_id"][r]}
            assert info["angle_deg"][r : r + len(ANGLES)] == list(ANGLES) and info["pair_index"][r] == k
            d1, d2o = u_bpaD[b, k, 0], u_bpaD[b, k, -1]
            assert abs(float(d1 @ d2o)) < 1e-9
            for a, deg in enumerate(ANGLES):
                want = math.cos(math.radians(deg)) * d1 + math.sin(math.radians(deg)) * d2o
                torch.testing.assert_close(u_bpaD[b, k, a], want)
            if source in ("sae", "sae_rare"):
                w = ctx.sae.W_dec.detach().double()
                w1, w2 = w[info["d1_id"][r]] / w[info["d1_id"][r]].norm(), w[info["d2_id"][r]] / w[info["d2_id"][r]].norm()
                torch.testing.assert_close(d1, w1)
                assert info["d1_d2_cos"][r] == pytest.approx(float(w1 @ w2))
                f = ctx.sae.encode(base[b : b + 1].float())[0]
                assert f[info["d1_id"][r]] > 0 and ((f[info["d2_id"][r]] > 0) == (source == "sae"))


def test_pairs_do_not_depend_on_how_rows_are_split_into_calls(ctx):
    d = ErrorCorrection(ErrorCorrectionConfig(source="random", n_pairs=2), ctx)
    base = random_bases(4, D_IN, seed=25)
    whole, _ = _rows(d, base, 14)
    split, _ = _rows(d, base, 14, split=17)  # a base's rows in two calls
    assert torch.equal(whole, split)
    other, _ = _rows(d, base, 14, seed=1)
    assert not torch.equal(whole, other)
    # propose() without target indices reads them off the runs of equal base indices
    bases, idx = base.double().repeat_interleave(14, 0), torch.arange(4).repeat_interleave(14)
    assert torch.equal(d.propose(bases, idx, torch.Generator().manual_seed(0)).unit_BD.double(), whole)


def test_rotation_turns_each_direction_by_the_given_angle(ctx):
    cfg = ErrorCorrectionConfig(source="sae", rotate_deg=30.0)
    u, info = _rows(ErrorCorrection(cfg, ctx), random_bases(4, D_IN, seed=26), cfg.n_rows())
    w = ctx.sae.W_dec.detach().double()
    for r in range(0, len(u), len(ANGLES)):
        if info["pair_ok"][r]:
            w1 = w[info["d1_id"][r]] / w[info["d1_id"][r]].norm()
            assert float(u[r] @ w1) == pytest.approx(math.cos(math.radians(30.0)), abs=1e-6)
    assert cfg.label() == "error_correction:sae@rot30"


def test_pca_pairs_are_top_components(ctx):
    cfg = ErrorCorrectionConfig(source="pca", n_pcs=3)
    u, info = _rows(ErrorCorrection(cfg, ctx), random_bases(6, D_IN, seed=27), cfg.n_rows())
    vals, vecs = torch.linalg.eigh(ctx.stats.cov_DD.double())
    top = vecs[:, -3:]
    assert set(info["d1_id"]) <= {0, 1, 2}
    assert torch.allclose((top.T @ u[:: len(ANGLES)].T).norm(dim=0), torch.ones(6, dtype=torch.float64))


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(angles=(0.0, 30.0, 90.0)), "include 0, 45 and 90"),
        (dict(angles=(0.0, 45.0, 100.0)), "within 0..90"),
        (dict(levels=(0.3, 0.1)), "levels"),
        (dict(source="melbo"), "valid choices"),
    ],
)
def test_bad_settings_fail_when_the_config_is_built(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        ErrorCorrectionConfig(**kw)


def test_rows_per_base_must_match_pairs_and_angles(tiny_cfg):
    from sensdir.validate import validate_walks

    cfg = with_(tiny_cfg, direction=ErrorCorrectionConfig(n_pairs=2), schedule=LengthsConfig(preset="short"))
    with pytest.raises(ConfigError, match="run.n_targets=1 must be n_pairs"):
        validate_walks(cfg)
    validate_walks(with_(cfg, run={"n_targets": 14}))


# ----------------------------------------------------------------------------- the toy model


@pytest.fixture(scope="module")
def toy():
    from sensdir.config import ModelConfig, SaeConfig
    from sensdir.loading import load_model, load_sae

    model = load_model(ModelConfig(source="toy_error_correction", name="toy_error_correction"), torch.device("cpu"))
    return model, load_sae(SaeConfig(source="toy_error_correction"), torch.device("cpu"))


def test_toy_model_is_built_as_documented(toy):
    from sensdir.toy_model import HOOK, ToySpec, feature_directions, g_exact, token_features, toy_readout

    model, sae = toy
    spec = ToySpec()
    feats = feature_directions(spec)
    gram = feats @ feats.T
    assert feats.shape == (256, 384) and torch.allclose(gram.diagonal(), torch.ones(256, dtype=torch.float64))
    assert (gram - torch.eye(256, dtype=torch.float64)).abs().max() == pytest.approx(1 / math.sqrt(128))
    torch.testing.assert_close(sae.W_dec.detach().double(), feats, atol=1e-6, rtol=0)
    x = torch.linspace(0, 6, 601, dtype=torch.float64)
    assert (toy_readout(x, spec) - g_exact(x, spec)).abs().max() < 0.01
    # the site holds the last token's two features, each exactly at unit, read by the SAE
    toks = torch.tensor([[5, 17, 300, 1000]])
    _, cache = model.run_with_cache(toks, names_filter=[HOOK, "blocks.0.hook_resid_post"])
    act = cache[HOOK][0, -1].double()
    pair = token_features(spec, model.cfg.d_vocab)[1000]
    torch.testing.assert_close(act, spec.unit * feats[pair].sum(0), atol=1e-5, rtol=0)
    assert set(torch.nonzero(sae.encode(act[None].float())[0]).squeeze(1).tolist()) == set(pair.tolist())
    # the readouts of clean features are 0: the clean output is uniform
    assert cache["blocks.0.hook_resid_post"][0, -1, 128:].abs().max() < 1e-5


def test_toy_model_kl_along_a_mixture_is_the_p4_model(toy):
    """Along the 45-degree mixture of the two active features KL is half of the pure
    direction's at the same length (each readout moves by a quarter): L_mix / L_pure = 2^(1/4)."""
    import torch.nn.functional as F

    from sensdir.toy_model import HOOK, ToySpec, feature_directions, token_features

    model, _ = toy
    spec = ToySpec()
    feats = feature_directions(spec).float()
    toks = torch.tensor([[9, 1000]])
    logits, cache = model.run_with_cache(toks, names_filter=HOOK)
    a, b = token_features(spec, model.cfg.d_vocab)[1000].tolist()

    @torch.no_grad()
    def kl(delta):
        resid = cache[HOOK].clone()
        resid[0, -1] += delta
        q = F.log_softmax(model.unembed(model.blocks[0](resid))[0, -1], -1)
        p = F.log_softmax(logits[0, -1], -1)
        return float((p.exp() * (p - q)).sum())

    for L in (0.8, 1.2):
        ratio = kl(L * (feats[a] + feats[b]) / math.sqrt(2)) / kl(L * feats[a])
        assert ratio == pytest.approx(0.5, abs=0.03)
