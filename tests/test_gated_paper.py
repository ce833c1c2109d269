"""Gated SAEs trained with the loss of Rajamanoharan et al. 2024 (METHODS §8, [R24]):
``sensdir.embedded.gated_paper`` and the shipped ``gated-paper-*`` SAEs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import heldout_activations

SAE_ROOT = Path(__file__).resolve().parents[1] / "sensdir" / "embedded" / "assets" / "saes"
SITE = "blocks.1.hook_resid_pre"
PAPER_NAMES = ("gated-paper-sparse", "gated-paper-mid")


def _cfg(d_in=3, d_sae=4, l1=0.5, **kw):
    from sae_lens import GatedTrainingSAEConfig

    return GatedTrainingSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        dtype="float32",
        device="cpu",
        apply_b_dec_to_input=True,
        l1_coefficient=l1,
        l1_warm_up_steps=0,
        decoder_init_norm=1.0,
        **kw,
    )


def _paper_sae(d_in=3, d_sae=4, seed=0, l1=0.5):
    from sensdir.embedded.gated_paper import PaperGatedTrainingSAE

    torch.manual_seed(seed)
    return PaperGatedTrainingSAE(_cfg(d_in, d_sae, l1))


def _hand_weights(sae):
    """Fixed, hand-made weights with a mix of open and closed gates."""
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -0.5, 1.0], [1.0, 0.0, 1.0, -2.0]]))
        sae.b_gate.copy_(torch.tensor([-0.5, 0.25, 0.0, 0.1]))
        sae.r_mag.copy_(torch.tensor([0.0, 0.5, -1.0, 0.3]))
        sae.b_mag.copy_(torch.tensor([0.2, -3.0, 0.1, 0.0]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.0, 1.0], [0.6, -0.8, 0.0]]))
        sae.b_dec.copy_(torch.tensor([0.1, -0.2, 0.3]))


X = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 2.0], [-1.0, 1.0, 1.0], [2.0, 0.0, 0.5]])


def _reference(sae, x):
    """METHODS §8 written out with W_gate = W_enc^T ([d_sae, d_in]), loops over latents."""
    W_gate = sae.W_enc.detach().T
    out_f, out_xhat = [], []
    for row in x:
        c = row - sae.b_dec.detach()
        f = []
        for i in range(W_gate.shape[0]):
            pre = float(W_gate[i] @ c)
            pi = pre + float(sae.b_gate.detach()[i])
            mag = max(
                0.0,
                float(torch.exp(sae.r_mag.detach()[i])) * pre + float(sae.b_mag.detach()[i]),
            )
            f.append((1.0 if pi > 0 else 0.0) * mag)
        f = torch.tensor(f)
        out_f.append(f)
        out_xhat.append(sae.W_dec.detach().T @ f + sae.b_dec.detach())
    return torch.stack(out_f), torch.stack(out_xhat)


def test_forward_matches_methods_formula():
    from sae_lens import GatedSAE, GatedSAEConfig

    sae = _paper_sae()
    _hand_weights(sae)
    f_ref, x_hat_ref = _reference(sae, X)
    assert (f_ref > 0).any() and (f_ref == 0).any()  # the example exercises both gate states
    with torch.no_grad():
        f = sae.encode(X)
        assert torch.allclose(f, f_ref, atol=1e-6)
        assert torch.allclose(sae.decode(f), x_hat_ref, atol=1e-6)
        assert torch.allclose(sae(X), x_hat_ref, atol=1e-6)
    # the inference class sae_lens loads from disk computes the same
    inf = GatedSAE(GatedSAEConfig(d_in=3, d_sae=4, dtype="float32", device="cpu", apply_b_dec_to_input=True))
    inf.load_state_dict(sae.state_dict())
    with torch.no_grad():
        assert torch.allclose(inf(X), x_hat_ref, atol=1e-6)
    assert set(sae.state_dict()) == {
        "W_enc",
        "W_dec",
        "b_dec",
        "b_gate",
        "b_mag",
        "r_mag",
    }


def _grads(sae, loss):
    sae.zero_grad(set_to_none=True)
    loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in sae.named_parameters()}


def test_aux_term_does_not_reach_decoder_but_main_term_does():
    from sensdir.embedded.gated_paper import paper_gated_losses

    sae = _paper_sae()
    _hand_weights(sae)
    losses = paper_gated_losses(sae, X, l1_coefficient=0.5)
    assert set(losses) == {"mse_loss", "l1_loss", "auxiliary_reconstruction_loss"}

    g_aux = _grads(sae, losses["auxiliary_reconstruction_loss"])
    assert torch.count_nonzero(g_aux["W_dec"]) == 0  # frozen decoder
    assert g_aux["W_enc"].abs().sum() > 0 and g_aux["b_gate"].abs().sum() > 0  # trains the gate path
    assert torch.count_nonzero(g_aux["r_mag"]) == 0 and torch.count_nonzero(g_aux["b_mag"]) == 0
    # b_dec: only the input-centring path inside pi (x - b_dec), never the decoder's b_dec:
    # d aux / d b_dec = -W_gate^T-weighted gradient w.r.t. pi, summed over the batch
    x_c = (X - sae.b_dec.detach()).requires_grad_(True)
    pi = x_c @ sae.W_enc.detach() + sae.b_gate.detach()
    recon = torch.relu(pi) @ sae.W_dec.detach() + sae.b_dec.detach()
    aux_ref = (recon - X).pow(2).sum(-1).mean()
    (g_xc,) = torch.autograd.grad(aux_ref, x_c)
    assert torch.allclose(g_aux["b_dec"], -g_xc.sum(0), atol=1e-6)
    # ...which differs from the gradient a live decoder (sae_lens's variant) would give
    live = (torch.relu((X - sae.b_dec) @ sae.W_enc + sae.b_gate) @ sae.W_dec + sae.b_dec - X).pow(2).sum(-1).mean()
    g_live = _grads(sae, live)
    assert g_live["W_dec"].abs().sum() > 0
    assert not torch.allclose(g_live["b_dec"], g_aux["b_dec"], atol=1e-4)

    g_mse = _grads(sae, paper_gated_losses(sae, X, 0.5)["mse_loss"])
    assert g_mse["W_dec"].abs().sum() > 0 and g_mse["b_dec"].abs().sum() > 0

    g_l1 = _grads(sae, paper_gated_losses(sae, X, 0.5)["l1_loss"])
    assert torch.count_nonzero(g_l1["W_dec"]) == 0  # plain L1, no decoder-norm weighting


def test_training_pass_uses_paper_loss():
    from sae_lens.saes.sae import TrainStepInput

    from sensdir.embedded.gated_paper import paper_gated_losses

    sae = _paper_sae()
    _hand_weights(sae)
    out = sae.training_forward_pass(
        TrainStepInput(
            sae_in=X,
            coefficients={"l1": 0.5},
            dead_neuron_mask=None,
            n_training_steps=0,
            is_logging_step=False,
        )
    )
    ref = paper_gated_losses(sae, X, 0.5)
    for k, v in ref.items():
        assert torch.allclose(out.losses[k], v), k
    assert torch.allclose(out.loss, sum(ref.values()))


def test_decoder_rows_unit_norm_after_training_steps():
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

    from sensdir.embedded.gated_paper import attach

    d_in, d_sae, bs = 8, 16, 32
    sae = _paper_sae(d_in, d_sae, seed=1)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(d_sae), atol=1e-6)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(bs * 10, d_in, generator=g) * 3 + 1

    def batches():
        while True:
            for i in range(0, data.shape[0], bs):
                yield data[i : i + bs]

    cfg = SAETrainerConfig(
        total_training_samples=bs * 5,
        train_batch_size_samples=bs,
        lr=0.05,
        lr_end=0.05,
        lr_scheduler_name="constant",
        lr_warm_up_steps=1,
        lr_decay_steps=1,
        device="cpu",
        dead_feature_window=10,
        feature_sampling_window=10,
        n_checkpoints=0,
        save_final_checkpoint=False,
        n_batches_for_norm_estimate=1,
    )
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batches())
    attach(trainer)
    before = sae.W_dec.detach().clone()
    it = batches()
    for _ in range(3):
        trainer.step(next(it))
        # rows renormalised right after the optimizer step
        assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(d_sae), atol=1e-5)
    assert not torch.allclose(sae.W_dec, before)  # it did train

    # the gradient that reaches the optimizer has no component parallel to the rows
    sae.zero_grad(set_to_none=True)
    from sensdir.embedded.gated_paper import paper_gated_losses

    sum(paper_gated_losses(sae, data[:bs], 0.5).values()).backward()
    par = (sae.W_dec.grad * sae.W_dec.detach()).sum(-1)
    assert par.abs().max() < 1e-5 * max(1.0, float(sae.W_dec.grad.abs().max()))
    assert sae.W_dec.grad.abs().sum() > 0


def test_parse_spec_gated_paper():
    from sensdir.embedded.sae_family import FAMILY, SaeSpec, parse_spec

    s = parse_spec("gp:gated-paper:4")
    assert s == SaeSpec("gp", "gated", l1_coefficient=4.0, loss="paper") and s.kind == "gated-paper"
    assert parse_spec("g:gated:3").loss == "sae_lens"
    names = [sp.name for sp in FAMILY[SITE]]
    # appended after the original family (its seeds depend on the position)
    assert names[:6] == [
        "l1-sparse",
        "l1-mid",
        "l1-dense",
        "topk-16",
        "topk-48",
        "gated",
    ]
    assert set(PAPER_NAMES) <= set(names)


# ----------------------------------------------------------------------------- shipped


def _shipped(name):
    path = SAE_ROOT / SITE / name
    if not (path / "card.json").is_file():
        pytest.skip(f"{SITE}/{name} not shipped")
    return path


@pytest.fixture(scope="module")
def heldout_acts():
    if not (SAE_ROOT.parent / "model" / "model.safetensors").is_file():
        pytest.skip("embedded model not built")
    return heldout_activations([SITE], max_rows=24)[SITE]


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_shipped_paper_gated_sae(name, heldout_acts):
    from sae_lens import SAE, GatedSAE

    path = _shipped(name)
    card = json.loads((path / "card.json").read_text())
    assert card["loss"] == "paper" and "Rajamanoharan" in card["loss_notes"]
    sae = SAE.load_from_disk(path)
    assert isinstance(sae, GatedSAE) and sae.cfg.architecture() == "gated"
    assert sae.cfg.metadata.hook_name == SITE == card["site"]
    assert sae.cfg.metadata.sensdir_loss == "paper"
    assert sae.W_dec.dtype == torch.float32
    # unit-norm rows in the scaled training space: shipped rows have norm 1/scale
    norms = sae.W_dec.norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 1 / card["input_scale_folded"]), rtol=2e-3)
    with torch.no_grad():
        f = sae.encode(heldout_acts)
    got = float((f != 0).float().sum(-1).mean())
    assert 0.8 * card["l0"] <= got <= 1.25 * card["l0"], (got, card["l0"])
    index = {e["name"]: e for e in json.loads((SAE_ROOT / "index.json").read_text())["saes"] if e["site"] == SITE}
    assert index[name]["loss"] == "paper" and index[name]["l0"] == card["l0"]
