"""The embedded SAE family: metric functions, shipped SAEs, and a tiny training run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from helpers import heldout_activations
from sensdir.sae_metrics import (
    ReconstructionStats,
    ce_loss_recovered,
    dead_fraction,
    firing_frequency,
    fvu,
    gamma,
    l0,
)

SAE_ROOT = Path(__file__).resolve().parents[1] / "sensdir" / "embedded" / "assets" / "saes"
MODEL_DIR = SAE_ROOT.parent / "model"
INDEX = SAE_ROOT / "index.json"
SITES = ("blocks.1.hook_resid_pre", "blocks.3.hook_resid_pre")


# ----------------------------------------------------------------------------- metrics


def _x(n: int = 500, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 2 + torch.linspace(-3, 3, d)


def test_fvu_perfect_mean_and_scaled():
    x = _x()
    assert fvu(x, x) == pytest.approx(0.0, abs=1e-12)
    # predicting the per-coordinate mean explains nothing
    assert fvu(x, x.mean(0, keepdim=True).expand_as(x)) == pytest.approx(1.0, rel=1e-9)
    # x_hat = 0.5 x on centred data: residual 0.25 ||x||^2, variance ||x||^2
    xc = x - x.mean(0)
    assert fvu(xc, 0.5 * xc) == pytest.approx(0.25, rel=1e-6)
    # leading dims are sample dims
    assert fvu(x.view(50, 10, 16), (0.5 * x).view(50, 10, 16)) == pytest.approx(fvu(x, 0.5 * x))


def test_fvu_hand_computed():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0); total variance 2
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 0.0]])  # squared error 1
    assert fvu(x, x_hat) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        fvu(x, x_hat[:1])


def test_gamma():
    x = _x()
    assert gamma(x, x) == pytest.approx(1.0)
    assert gamma(x, 0.5 * x) == pytest.approx(0.5)
    assert gamma(x, torch.zeros_like(x)) == pytest.approx(0.0)
    # an orthogonal error does not change gamma
    x2 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert gamma(x2, x2 + torch.tensor([[0.0, 5.0], [7.0, 0.0]])) == pytest.approx(1.0)


def test_ce_loss_recovered():
    assert ce_loss_recovered(2.0, 2.0, 5.0) == pytest.approx(1.0)
    assert ce_loss_recovered(2.0, 5.0, 5.0) == pytest.approx(0.0)
    assert ce_loss_recovered(2.0, 3.0, 5.0) == pytest.approx(2 / 3)
    assert ce_loss_recovered(2.0, 6.0, 5.0) < 0  # worse than zero ablation
    with pytest.raises(ValueError):
        ce_loss_recovered(2.0, 3.0, 2.0)


def test_l0_firing_frequency_dead():
    f = torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    assert l0(f) == pytest.approx(5 / 3)
    freq = firing_frequency(f)
    assert torch.allclose(freq, torch.tensor([0.0, 2 / 3, 1.0, 0.0]))
    assert dead_fraction(freq) == pytest.approx(0.5)


def test_streaming_stats_match_whole_tensor():
    x = _x(1000, 8, seed=1)
    x_hat = 0.8 * x + 0.1 * _x(1000, 8, seed=2)
    f = torch.relu(_x(1000, 12, seed=3) - 2)
    st = ReconstructionStats(12)
    for i in range(0, 1000, 300):
        st.update(x[i : i + 300], x_hat[i : i + 300], f[i : i + 300])
    assert st.fvu() == pytest.approx(fvu(x, x_hat), rel=1e-9)
    assert st.gamma() == pytest.approx(gamma(x, x_hat), rel=1e-9)
    assert st.l0() == pytest.approx(l0(f), rel=1e-12)
    assert torch.allclose(st.firing_frequency(), firing_frequency(f))


# ----------------------------------------------------------------------------- windows


def test_stream_rows():
    from sensdir.embedded.sae_data import stream_rows

    rows = stream_rows(torch.arange(10), 4)
    assert rows.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError):
        stream_rows(torch.arange(3), 4)


def test_sentence_windows_start_at_sentences_and_follow_the_seed():
    from sensdir.embedded.sae_mixture import sentence_windows

    eot = 0
    stream = torch.tensor([0, 5, 6, 0, 7, 0, 8, 9, 9, 0, 4, 0, 3, 3])  # sentence starts 0 3 5 9 11
    rows = sentence_windows(stream, eot, 4, 3, seed=1)
    assert rows.shape == (3, 4) and (rows[:, 0] == eot).all()
    starts = []
    for r in rows.tolist():  # each row is the stream from one of its sentence starts on
        hits = [i for i in (0, 3, 5, 9) if stream[i : i + 4].tolist() == r]  # 11 + 4 > 14: never a start
        assert len(hits) == 1
        starts.append(hits[0])
    assert len(set(starts)) == 3  # drawn without replacement
    assert torch.equal(rows, sentence_windows(stream, eot, 4, 3, seed=1))
    assert any(not torch.equal(rows, sentence_windows(stream, eot, 4, 3, seed=s)) for s in range(2, 6))
    with pytest.raises(ValueError):
        sentence_windows(stream, eot, 4, 5, seed=0)


def test_task_rows_keep_the_model_training_proportions():
    from sensdir.embedded.sae_mixture import task_row_counts
    from sensdir.embedded.train import ROWS_MIX

    # the model's batch of 128 rows holds 88 prose, 20 IOI and 20 first-letter rows
    assert task_row_counts(88) == (20, 20)
    n_ioi, n_fl = task_row_counts(10_481)
    total = 10_481 + n_ioi + n_fl
    assert n_ioi / total == pytest.approx(ROWS_MIX[1], abs=1e-3) and n_fl / total == pytest.approx(ROWS_MIX[2], abs=1e-3)


def test_shuffled_passes_and_the_first_letter_stream():
    from sensdir.embedded.data import first_letter_stream_texts, shuffled_passes
    from sensdir.embedded.tasks import first_letter_train_texts

    texts = [f"t{i}" for i in range(7)]
    out = shuffled_passes(texts, 3, "k")
    assert len(out) == 21 and all(sorted(out[i * 7 : (i + 1) * 7]) == sorted(texts) for i in range(3))
    assert out == shuffled_passes(texts, 3, "k") and out != shuffled_passes(texts, 3, "other")
    words = ["apple", "banana", "cherry", "dog", "egg", "fig"]
    stream = first_letter_stream_texts(words, 0, passes=2)
    assert sorted(stream) == sorted(first_letter_train_texts(words) * 2)


# ----------------------------------------------------------------------------- shipped SAEs


def _index() -> list[dict]:
    if not INDEX.is_file():
        return []
    return json.loads(INDEX.read_text())["saes"]


SHIPPED = _index()
needs_saes = pytest.mark.skipif(not SHIPPED, reason="no embedded SAEs shipped (run python -m sensdir.embedded.train_saes)")


@needs_saes
def test_index_covers_family():
    names = {(e["site"], e["name"]) for e in SHIPPED}
    for site in SITES:
        for name in ("l1-sparse", "l1-mid", "l1-dense", "topk-16", "topk-48", "gated"):
            assert (site, name) in names
    l1 = {e["site"]: {} for e in SHIPPED}
    for e in SHIPPED:
        l1[e["site"]][e["name"]] = e["l0"]
    for site, d in l1.items():  # the three L1 SAEs are clearly different in sparsity
        assert d["l1-sparse"] < 0.75 * d["l1-mid"] and d["l1-mid"] < 0.75 * d["l1-dense"], (site, d)
    total = sum(p.stat().st_size for p in SAE_ROOT.rglob("*") if p.is_file())
    assert total < 16e6, f"the SAE assets take {total / 1e6:.1f} MB"


@needs_saes
@pytest.mark.parametrize("entry", SHIPPED, ids=[f"{e['site']}/{e['name']}" for e in SHIPPED])
def test_shipped_sae_loads(entry):
    from sae_lens import SAE
    from safetensors.torch import load_file

    path = SAE_ROOT / entry["path"]
    sae = SAE.load_from_disk(path)
    assert sae.cfg.metadata.hook_name == entry["site"]
    assert sae.cfg.architecture() == entry["architecture"]
    assert sae.cfg.d_in == 256 and sae.cfg.d_sae == entry["d_sae"]
    assert tuple(sae.W_dec.shape) == (sae.cfg.d_sae, sae.cfg.d_in)
    assert sae.W_dec.dtype == torch.float32  # stored float16, cfg says float32
    assert torch.isfinite(sae.W_dec).all() and torch.isfinite(sae.W_enc).all()
    card = json.loads((path / "card.json").read_text())
    for key in ("l0", "fvu", "ce_loss_recovered", "gamma", "dead_fraction", "seed", "command", "training_tokens"):
        assert key in card
    assert card["site"] == entry["site"] and card["l0"] == entry["l0"]
    freq = load_file(str(path / "firing_freq.safetensors"))["firing_freq"]
    assert freq.shape == (sae.cfg.d_sae,)
    assert float(freq.sum()) == pytest.approx(card["l0"], rel=1e-3)  # sum of frequencies = L0
    assert dead_fraction(freq) == pytest.approx(card["dead_fraction"])


@pytest.fixture(scope="module")
def heldout_acts():
    if not (MODEL_DIR / "model.safetensors").is_file():
        pytest.skip("embedded model not built")
    return heldout_activations(SITES, max_rows=24, seed=0)


@needs_saes
@pytest.mark.parametrize("entry", SHIPPED, ids=[f"{e['site']}/{e['name']}" for e in SHIPPED])
def test_shipped_sae_l0_and_fvu_on_heldout(entry, heldout_acts):
    from sae_lens import SAE

    sae = SAE.load_from_disk(SAE_ROOT / entry["path"])
    x = heldout_acts[entry["site"]]
    with torch.no_grad():
        f = sae.encode(x)
        x_hat = sae.decode(f)
    got = l0(f)
    want = entry["l0"]
    assert 0.8 * want <= got <= 1.25 * want, f"L0 {got:.1f} on the sample vs {want:.1f} on the card"
    if entry["architecture"] == "topk":
        assert got <= entry["k"] + 1e-6
    assert fvu(x, x_hat) <= 1.15 * entry["fvu"] + 0.02


def _ioi_study_saes() -> list[str]:
    """The SAEs ``experiment=ioi_supervised`` sweeps over (issue 12's target)."""
    text = (SAE_ROOT.parents[2] / "conf" / "experiment" / "ioi_supervised.yaml").read_text()
    ids = re.search(r"sae\.sae_id:\s*(\S+)", text)
    assert ids is not None, "the ioi_supervised preset no longer sweeps sae.sae_id"
    return ids.group(1).split(",")


@needs_saes
def test_cards_describe_the_training_mixture():
    from sensdir.embedded.train import ROWS_MIX

    for e in SHIPPED:
        card = json.loads((SAE_ROOT / e["path"] / "card.json").read_text())
        for split in ("train", "heldout"):
            rows = card["rows_by_source"][split]
            total = sum(rows.values())
            assert rows["ioi"] / total == pytest.approx(ROWS_MIX[1], abs=2e-3), (split, rows)
            assert rows["first_letter"] / total == pytest.approx(ROWS_MIX[2], abs=2e-3), (split, rows)
        assert set(card["fvu_by_source"]) == {"prose", "ioi", "first_letter"}
        # sum ||x||^2 >= sum ||x - mean||^2: the relative error is at most the FVU
        assert 0 < card["ioi_end_rel_sq_error"] <= card["ioi_end_fvu"]
        assert card["ioi_end_prompts"] == 1000 and e["ioi_end_rel_sq_error"] == card["ioi_end_rel_sq_error"]


@pytest.fixture(scope="module")
def ioi_end_acts():
    if not (MODEL_DIR / "model.safetensors").is_file():
        pytest.skip("embedded model not built")
    from sensdir.embedded.sae_data import load_model
    from sensdir.embedded.sae_mixture import ioi_end_activations

    return ioi_end_activations(load_model(), SITES, n=200)


def _end_errors(sae_id: str, ioi_end_acts) -> tuple[dict, dict]:
    """(card, the END errors of the shipped SAE on a fresh sample of the card's prompts)."""
    from sae_lens import SAE

    from sensdir.embedded.sae_mixture import end_errors

    card = json.loads((SAE_ROOT / sae_id / "card.json").read_text())
    sae = SAE.load_from_disk(SAE_ROOT / sae_id)
    return card, end_errors(sae, ioi_end_acts[sae.cfg.metadata.hook_name])


@needs_saes
@pytest.mark.parametrize("sae_id", [f"{e['site']}/{e['name']}" for e in SHIPPED if e["name"] in ("l1-mid", "topk-48")])
def test_ioi_end_error_on_the_card_is_reproduced(sae_id, ioi_end_acts):
    card, got = _end_errors(sae_id, ioi_end_acts)
    assert got["rel_sq_error"] == pytest.approx(card["ioi_end_rel_sq_error"], rel=0.15)
    assert got["fvu"] == pytest.approx(card["ioi_end_fvu"], rel=0.15)
    assert got["rel_sq_error"] <= got["fvu"]


@needs_saes
@pytest.mark.xfail(
    strict=True,
    reason="issue 12: trained on the model's mixture, l1-mid's END error fell from 0.70 / 0.89 to 0.46 / 0.72 "
    "(blocks.1 / blocks.3) but an L1 SAE at L0 ~20 does not reach 0.3 (CARDS.md, 'IOI END error'); "
    "topk-16 / topk-48 do at blocks.1, topk-48 at blocks.3",
)
@pytest.mark.parametrize("sae_id", _ioi_study_saes())
def test_ioi_study_saes_reconstruct_end_activations(sae_id, ioi_end_acts):
    """Issue 12's target: the SAEs of the IOI study reconstruct IOI END activations of
    held-out-template prompts with relative squared error <= 0.3, on the card and on a fresh
    sample."""
    card, got = _end_errors(sae_id, ioi_end_acts)
    assert card["ioi_end_rel_sq_error"] <= 0.3 and got["rel_sq_error"] <= 0.3


# ----------------------------------------------------------------------------- training


def test_tiny_training_run(tmp_path):
    """End to end on a random model: train, ship (float16 on disk), reload, card + index."""
    from sae_lens import SAE

    from sensdir.embedded.sae_family import SaeSpec, TrainSettings
    from sensdir.embedded.train_saes import run

    settings = TrainSettings(seed=0, train_tokens=4 * 512, batch_size=512, eval_rows=4, ce_rows=2, threads=1)
    family = {"blocks.1.hook_resid_pre": (SaeSpec("t", "topk", k=4), SaeSpec("g", "gated", l1_coefficient=1.0))}
    cards = run(settings, tmp_path, sites=["blocks.1.hook_resid_pre"], smoke=True, command="test", family=family)
    assert [c["name"] for c in cards] == ["t", "g"]
    for c in cards:
        assert math.isfinite(c["fvu"]) and math.isfinite(c["ce_loss_recovered"])
        sae = SAE.load_from_disk(tmp_path / c["path"])
        assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_pre"
        assert sae.W_dec.dtype == torch.float32
        from safetensors import safe_open

        with safe_open(str(tmp_path / c["path"] / "sae_weights.safetensors"), "pt") as fh:
            assert fh.get_tensor("W_dec").dtype == torch.float16
    assert cards[0]["l0"] == pytest.approx(4.0, abs=1e-6)
    # no tokenizer on the random model: no IOI END error, FVU on the one synthetic source
    assert cards[0]["ioi_end_rel_sq_error"] is None and set(cards[0]["fvu_by_source"]) == {"synthetic"}
    index = json.loads((tmp_path / "index.json").read_text())
    assert {e["name"] for e in index["saes"]} == {"t", "g"}
    assert (tmp_path / "CARDS.md").read_text().count("| `blocks.1.hook_resid_pre` |") == 2
