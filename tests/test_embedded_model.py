"""The embedded model: gpt.py equivalence with HookedTransformer, and the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sensdir.embedded.gpt import GPT, GPTConfig

ASSETS = Path(__file__).resolve().parents[1] / "sensdir" / "embedded" / "assets" / "model"
ALLOWED_MISSING = {"mask", "IGNORE"}


def _hooked(cfg: GPTConfig):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    return HookedTransformer(HookedTransformerConfig(**cfg.hooked_kwargs()))


def test_gpt_matches_hooked_transformer():
    """Randomly initialised gpt.GPT and HookedTransformer with the same weights agree to
    atol 1e-4 in float32 (logits are O(1) here)."""
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, d_vocab=512, n_ctx=32)
    gpt = GPT(cfg)
    gpt.init_weights(torch.Generator().manual_seed(0), std=0.1)
    with torch.no_grad():  # make biases and LayerNorm parameters non-trivial too
        for name, p in gpt.named_parameters():
            if not name.split(".")[-1].startswith("W_"):
                p.add_(0.1 * torch.randn_like(p))
    gpt.eval()
    ht = _hooked(cfg)
    missing, unexpected = ht.load_state_dict(gpt.state_dict(), strict=False)
    assert not unexpected
    assert {k.split(".")[-1] for k in missing} <= ALLOWED_MISSING, missing
    tokens = torch.randint(0, cfg.d_vocab, (3, cfg.n_ctx), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = gpt(tokens)
        b = ht(tokens)
    assert a.shape == b.shape == (3, cfg.n_ctx, cfg.d_vocab)
    assert a.abs().max() > 0.5
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_state_dict_names_and_shapes_match():
    cfg = GPTConfig()
    ours = {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in _hooked(cfg).state_dict().items()
              if k.split(".")[-1] not in ALLOWED_MISSING}
    assert ours == theirs
