"""Feature absorption (METHODS §6, [C24], SAEBench's projection-based metrics) and the
``probe`` direction type: definitions on hand-built cases, then end to end on the tiny model."""

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from helpers import make_sae, with_
from sensdir.studies.absorption import (
    Absorption,
    AbsorptionConfig,
    AbsorptionThresholds,
    absorption_scores,
    choose_main_latents,
    decoder_cos,
)
from sensdir.tasks.first_letter import LETTERS, alpha_vocab, f1_score, fit_logistic, letter_probes

# d = 4, probe direction u = e0. Latent 0 is the main latent (decoder e0, cos 1); latent 1 an
# aligned absorber (cos 0.6); latent 2 weakly aligned (cos 0.05: a full-absorption latent by
# SAEBench's 0.025 but not a fraction candidate, which needs 0.1); latent 3 orthogonal.
W_DEC = torch.tensor(
    [
        [1.0, 0.0, 0.0, 0.0],
        [0.6, 0.8, 0.0, 0.0],
        [0.05, math.sqrt(1 - 0.05**2), 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ],
    dtype=torch.float64,
)
U = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)


def _scores(x_rows, f_rows, main=(0,), W=W_DEC, u=U):
    x = torch.tensor(x_rows, dtype=torch.float64)
    f = torch.tensor(f_rows, dtype=torch.float64)
    n, S = f.shape
    cos = decoder_cos(W, u[None])[0].expand(n, S)
    main_mask = torch.zeros(n, S, dtype=torch.bool)
    main_mask[:, list(main)] = True
    return absorption_scores(x, f, u[None].expand(n, -1), cos, main_mask)


def test_latents_are_taken_with_unit_decoder_rows():
    # f'_j = f_j ||W_dec[j]||: with the unit decoder rows it gives the same reconstruction, and
    # f'_j cos_j is the latent's contribution f_j W_dec[j] . u to x . u
    from types import SimpleNamespace

    sae = make_sae(4, 6, "blocks.0.hook_resid_pre")
    with torch.no_grad():
        sae.W_dec.mul_(torch.tensor([0.5, 1.0, 2.0, 1.5, 0.7, 3.0])[:, None])
    study = Absorption.__new__(Absorption)
    study.ctx = SimpleNamespace(sae=sae)
    x = torch.randn(3, 4)
    f = sae.encode(x).detach()
    f_unit = study._encode(x)
    W = sae.W_dec.detach()
    assert torch.allclose(f_unit @ (W / W.norm(dim=-1, keepdim=True)), f @ W, atol=1e-5)
    u = torch.tensor([0.6, 0.8, 0.0, 0.0])
    assert torch.allclose(f_unit * decoder_cos(W, u[None])[0].float(), f * (W @ u), atol=1e-5)


def test_decoder_cos_of_the_hand_built_dictionary():
    assert decoder_cos(W_DEC, U[None])[0].tolist() == pytest.approx([1.0, 0.6, 0.05, 0.0])


def test_main_latent_that_fires_is_no_absorption():
    # P = 2, M = 2 >= P -> fraction 0; the main latent fires -> not full absorption
    frac, full = _scores([[2.0, 0, 0, 0]], [[2.0, 0, 0, 0]])
    assert frac.tolist() == [0.0] and full.tolist() == [False]


def test_single_aligned_latent_absorbs_fully():
    # main silent; latent 1 at 3: x = 3 W_dec[1], P = 1.8, c_1 = 3 * 0.6 = 1.8 = P
    x = (3 * W_DEC[1]).tolist()
    frac, full = _scores([x], [[0.0, 3.0, 0, 0]])
    assert frac.tolist() == [1.0] and full.tolist() == [True]


def test_partial_absorption_is_absorbed_over_absorbed_plus_main():
    # main 0.5 (M = 0.5), latent 1 at 2 (A = 1.2), plus 0.3 e0 not explained by latents:
    # P = 0.5 + 1.2 + 0.3 = 2.0, A / P = 0.6 >= 0.4, a = min(A, P - M) = 1.2,
    # fraction = a / (a + M) = 1.2 / 1.7 (not A / P); the main latent fires -> not full
    x = (0.5 * W_DEC[0] + 2 * W_DEC[1] + 0.3 * U).tolist()
    frac, full = _scores([x], [[0.5, 2.0, 0, 0]])
    assert frac.item() == pytest.approx(1.2 / 1.7, abs=1e-12) and full.tolist() == [False]


def test_absorbed_share_capped_by_the_unexplained_projection():
    # main 1.0 (M = 1), latent 1 at 2 (A = 1.2), but P = 1.5 only (x has -0.7 e0 besides):
    # a = min(1.2, P - M = 0.5) = 0.5 -> fraction 0.5 / 1.5 = 1/3
    x = (1.0 * W_DEC[0] + 2 * W_DEC[1] - 0.7 * U).tolist()
    frac, _ = _scores([x], [[1.0, 2.0, 0, 0]])
    assert frac.item() == pytest.approx(1 / 3, abs=1e-12)


def test_small_absorbing_share_is_no_absorption():
    # main silent; latent 1 at 0.5 gives c = 0.3 of P = 2: share 0.15 < 0.4 on both metrics
    frac, full = _scores([[2.0, 0, 0, 0]], [[0.0, 0.5, 0, 0]])
    assert frac.tolist() == [0.0] and full.tolist() == [False]


def test_weakly_aligned_latent_counts_for_full_absorption_only():
    # latent 2 (cos 0.05) at 10 explains all of P = 0.5: cos >= 0.025 -> full absorption,
    # but cos < 0.1 -> no candidate for the fraction, which is 0
    x = (10 * W_DEC[2]).tolist()
    frac, full = _scores([x], [[0.0, 0, 10.0, 0]])
    assert frac.tolist() == [0.0] and full.tolist() == [True]


def test_negative_projection_is_no_absorption():
    frac, full = _scores([[-1.0, 0, 0, 0]], [[0.0, 0, 0, 0]])
    assert frac.tolist() == [0.0] and full.tolist() == [False]


def test_at_most_three_absorbing_latents():
    # 5 latents with decoder e0; main latent 0 at 1, four absorbers at 1 each: P = 5, M = 1,
    # A = the top 3 = 3, a = min(3, 4) = 3 -> fraction 3 / 4
    W = torch.tensor([[1.0, 0, 0, 0]] * 5, dtype=torch.float64)
    frac, full = _scores([[5.0, 0, 0, 0]], [[1.0, 1, 1, 1, 1]], W=W)
    assert frac.item() == pytest.approx(0.75) and full.tolist() == [False]
    # at most 2 absorbers: A = 2, A / P = 0.4 (not < 0.4), a = 2 -> fraction 2 / 3; with a
    # share threshold of 0.5 the same A / P = 0.4 is too small -> 0
    x = torch.tensor([[5.0, 0, 0, 0]], dtype=torch.float64)
    f = torch.tensor([[1.0, 1, 1, 1, 1]], dtype=torch.float64)
    main = torch.tensor([[True, False, False, False, False]])
    fr, _ = absorption_scores(x, f, U[None], torch.ones(1, 5), main, AbsorptionThresholds(0.1, 0.025, 0.4, 2))
    assert fr.item() == pytest.approx(2 / 3)
    fr, _ = absorption_scores(x, f, U[None], torch.ones(1, 5), main, AbsorptionThresholds(0.1, 0.025, 0.5, 2))
    assert fr.item() == 0.0


def test_rows_are_independent():
    rows_x = [[2.0, 0, 0, 0], (3 * W_DEC[1]).tolist(), (0.5 * W_DEC[0] + 2 * W_DEC[1] + 0.3 * U).tolist()]
    rows_f = [[2.0, 0, 0, 0], [0.0, 3.0, 0, 0], [0.5, 2.0, 0, 0]]
    frac, full = _scores(rows_x, rows_f)
    assert frac.tolist() == pytest.approx([0.0, 1.0, 1.2 / 1.7]) and full.tolist() == [False, True, False]


def test_k_sparse_search_stops_at_the_first_small_gain():
    # 0.6 > 0.5 + 0.03: k = 2; 0.62 is not > 0.63: stop (the later 0.9 is never reached)
    assert choose_main_latents([0.5, 0.6, 0.62, 0.9], [7, 3, 5, 1], 0.03) == (2, [7, 3])
    assert choose_main_latents([0.8], [4], 0.03) == (1, [4])
    assert choose_main_latents([0.5, 0.52], [4, 9], 0.03) == (1, [4])


def test_f1():
    pred = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    true = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    assert f1_score(pred, true) == pytest.approx((2 * 2 / (2 * 2 + 1 + 1), 2 / 3, 2 / 3))


def test_logistic_probe_recovers_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    d, n = 8, 4000
    w = torch.randn(d, generator=g)
    w /= w.norm()
    X = torch.randn(n, d, generator=g) + 3.0  # off-centre: the bias must absorb the mean
    y = (torch.rand(n, generator=g) < torch.sigmoid(4 * ((X - 3.0) @ w) - 1.0)).double()
    W, b = fit_logistic(X, y[:, None], l2=1e-4)
    cos = float(W[0] @ w / W[0].norm())
    assert cos > 0.97
    # balanced classes: logits > 0 on positives more often than not
    assert f1_score((X @ W.T + b)[:, 0] > 0, y.bool())[0] > 0.7


def test_alpha_vocab_keeps_alphabetic_tokens_with_optional_space():
    class Tok:
        all_special_ids = [0]

        def get_vocab(self):
            return {"<s>": 0, "Ġcat": 1, "dog": 2, "Ġ3d": 3, "Ġa": 4, "Ġé": 5, "ab": 6}

        def decode(self, ids):
            return {0: "<s>", 1: " cat", 2: "dog", 3: " 3d", 4: " a", 5: " é", 6: "ab"}[ids[0]]

    assert alpha_vocab(Tok(), min_len=2) == [(1, " cat"), (2, "dog"), (6, "ab")]
    assert (4, " a") in alpha_vocab(Tok(), min_len=1)


@pytest.fixture()
def tiny_model_site(tiny_cfg):
    from sensdir.loading import check_site, load_model, load_sae

    model = load_model(tiny_cfg.model, torch.device("cpu"))
    sae = load_sae(tiny_cfg.sae, torch.device("cpu"))
    return model, sae, check_site(model, sae, tiny_cfg.site.hook)


def test_probe_direction_is_the_unit_weight_row(tiny_model_site):
    from sensdir.directions import DIRECTIONS
    from sensdir.directions.probe import ProbeConfig
    from sensdir.walk_types import DirectionContext

    model, sae, site = tiny_model_site
    cfg = ProbeConfig(letter="S", n_icl_examples=0)
    ctx = DirectionContext(sae=sae, stats=None, pool_PD=torch.zeros(1, 32), model=model, site=site)
    direction = DIRECTIONS.build(cfg, ctx)
    base = torch.randn(5, 32)
    prop = direction.propose(base, torch.arange(5), torch.Generator().manual_seed(0))
    assert prop.target_BD is None and prop.unit_BD.shape == (5, 32)
    assert torch.allclose(prop.unit_BD.norm(dim=-1), torch.ones(5), atol=1e-6)
    assert torch.equal(prop.unit_BD[0], prop.unit_BD[4])
    W = letter_probes(model, site.hook, cfg.task(), cfg.l2).W_CD[LETTERS.index("S")]
    assert torch.allclose(prop.unit_BD[0], W / W.norm(), atol=1e-6)
    assert cfg.label() == "probe:S" and DIRECTIONS.get("probe").impl.returns_for(cfg) == "direction"


def test_probe_direction_needs_the_model_and_a_letter():
    from sensdir.directions import DIRECTIONS
    from sensdir.directions.probe import ProbeConfig
    from sensdir.errors import ConfigError
    from sensdir.walk_types import DirectionContext

    with pytest.raises(ConfigError, match="letter="):
        ProbeConfig(letter="a")
    with pytest.raises(ConfigError, match="model"):
        DIRECTIONS.build(
            ProbeConfig(), DirectionContext(sae=make_sae(4, 8, "blocks.0.hook_resid_pre"), stats=None, pool_PD=torch.zeros(1, 4))
        )


def _probes_fitted_on_every_word(data, l2):
    """The tiny model is random: its probes cannot generalise to unseen tokens, so the end-to-end
    test fits them on every word (test split included) to have true positives to score."""
    from dataclasses import replace

    from sensdir.tasks.first_letter import fit_letter_probes

    probes = fit_letter_probes(replace(data, train_N=torch.ones_like(data.train_N)), l2)
    te = ~data.train_N
    logits = data.acts_ND[te] @ probes.W_CD.T + probes.b_C
    stats = [f1_score(logits[:, c] > 0, data.letter_N[te] == c) for c in range(len(LETTERS))]
    return replace(probes, f1_C=[s[0] for s in stats], precision_C=[s[1] for s in stats], recall_C=[s[2] for s in stats])


def test_absorption_study_end_to_end_and_reduce(tiny_cfg, tmp_path, monkeypatch):
    import sensdir.studies.absorption as absorption_mod
    from sensdir.job import run_job

    monkeypatch.setattr(absorption_mod, "fit_letter_probes", _probes_fitted_on_every_word)
    cfg = with_(tiny_cfg, study=AbsorptionConfig(n_icl_examples=0, k_max=3, f1_threshold=0.0, min_letters=1))
    res = run_job(cfg)
    rows = pq.read_table(res.shard_path).to_pylist()
    assert [r["row_key"] for r in rows] == [f"letter={L}" for L in LETTERS]
    assert json.loads(res.manifest_path.read_text())["kind"] == "absorption"
    n_words = rows[0]["n_words"]
    assert n_words > 20 and sum(r["n_train"] + r["n_test"] for r in rows) == n_words
    assert 0 < rows[0]["l0"] <= 128
    for r in rows:
        assert 0 <= r["probe_f1"] <= 1 and r["n_probe_tp"] <= r["n_test"]
        assert len(r["main_latents"]) == r["k"] <= 3 and len(r["main_latents_cos"]) == r["k"]
        if r["n_probe_tp"]:
            assert 0 <= r["mean_absorption_fraction"] <= 1 and 0 <= r["full_absorption_rate"] <= 1
        else:
            assert math.isnan(r["mean_absorption_fraction"])
    assert any(r["n_probe_tp"] for r in rows)
    assert run_job(cfg).skipped

    table = pq.read_table(res.shard_path)
    manifest = json.loads(res.manifest_path.read_text())
    tidy, figs = Absorption.summarize([(manifest, table)], tmp_path / "fig")
    means = [t for t in tidy if t["statistic"] == "mean"]
    assert {t["metric"] for t in means} == {"absorption_fraction", "full_absorption_rate"}
    assert all(t["section"] == "absorption" and t["x"] == pytest.approx(rows[0]["l0"]) for t in means)
    ok = [r for r in rows if r["probe_f1"] > 0.0 and r["n_probe_tp"] > 0]
    (frac,) = [t for t in means if t["metric"] == "absorption_fraction"]
    assert frac["n"] == len(ok) and frac["value"] == pytest.approx(sum(r["mean_absorption_fraction"] for r in ok) / len(ok))
    assert set(figs) == {"absorption_letters", "absorption_l0"} and all(p.is_file() for p in figs.values())
    # SAEBench's gate: fewer than min_letters letters above the F1 threshold -> no "mean"
    gated = json.loads(json.dumps(manifest))
    gated["config"]["study"]["min_letters"] = len(ok) + 1
    tidy2, _ = Absorption.summarize([(gated, table)], tmp_path / "fig2")
    pick = lambda rows, stat: [t for t in rows if t["metric"] == "absorption_fraction" and t["statistic"] == stat]  # noqa: E731
    assert pick(tidy2, "mean")[0]["value"] is None
    assert pick(tidy2, "mean_ungated")[0]["value"] == pytest.approx(frac["value"])


@pytest.mark.parametrize("experiment", ["absorption", "c24_absorption"])
def test_absorption_presets_compose(experiment):
    from hydra import compose, initialize_config_dir

    from sensdir.config import register_configs, to_config

    register_configs()
    conf = str(Path(__file__).resolve().parents[1] / "sensdir" / "conf")
    with initialize_config_dir(conf, version_base=None):
        cfg = to_config(compose("config", overrides=[f"experiment={experiment}"]))
    assert isinstance(cfg.study, AbsorptionConfig) and cfg.run.name == experiment
    if experiment == "c24_absorption":
        assert cfg.sae.release == "gpt2-small-res-jb-feature-splitting" and cfg.study.separator == "\n"
        assert cfg.study.n_icl_examples == 10
