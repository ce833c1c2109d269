"""A toy model of feature-specific error correction with known features, METHODS §11 [FH26].

A one-block ``transformer_lens.HookedTransformer`` whose weights are set by construction (no
training, deterministic from ``ToySpec.seed``), built in well under a second on a CPU:

- **Features.** ``n_features = 2 * d_features`` unit directions in a ``d_features``-dimensional
  input subspace of the residual stream: the standard basis and the normalised Walsh-Hadamard
  basis, both turned by one random rotation. They are in superposition (twice as many as
  dimensions) with mutual coherence exactly ``1 / sqrt(d_features)`` (0.088 at the default 128).
- **Embedding.** Each token of the vocabulary turns on ``active_per_token`` distinct features
  (drawn once per token) at value ``unit``: ``W_E[t] = unit * sum_i d_i``. Positional
  embeddings and attention are zero, so the site ``blocks.0.hook_resid_pre`` at the last
  position holds exactly the last token's features.
- **Error correction.** The MLP reads each feature ``x_i = <d_i, resid>`` and writes, into an
  output coordinate of its own (``d_features + i``, orthogonal to the input subspace), the
  staircase ``readout_gain * g(x_i)``: flat within ``margin * unit`` of every multiple of ``unit`` (0 up to
  ``n_levels * unit``), rising linearly in between. Built from ReLU neuron pairs,
  ``g(x) = s * sum_k [ReLU(x - k unit - m) - ReLU(x - (k + 1) unit + m)]`` with ``m = margin *
  unit`` and ``s = 1 / (unit - 2 m)``, so a feature's readout snaps back to its clean value
  while its error stays below ``m``: small errors along a feature, and interference from the
  other features (at most ``active_per_token - 1`` times the coherence, times ``unit``), are
  corrected.
- **Readout.** No layer norm anywhere; ``W_U`` reads only the output coordinates (random
  ``N(0, unembed_scale^2)`` rows), so the logits are a linear function of the corrected
  feature values ``g(x_i)`` (weight ``readout_gain * unembed_scale`` = 3), plus whatever a
  perturbation puts in the output coordinates directly (the residual stream passes it on,
  weight ``unembed_scale``: a direct, uncorrected, linear path).

Why it tests the L^p model: along a true feature, KL stays 0 until the feature's error
exceeds ``m``; along a 45-degree mixture of two features each moves by ``L / sqrt 2``, so the
mixture needs about ``sqrt 2`` times the pure length (``p >> 2``). A random direction moves
the output coordinates linearly (a quadratic KL, ``p = 2``) and spreads over all features.
Turning a true feature toward a random direction moves ``p`` from one to the other.

``toy_sae`` is an sae_lens SAE whose decoder rows *are* the true features (encoder tied,
threshold ``unit / 2``), so the ``sae`` pair source draws true features: the two active on the
base. ``model.source=toy_error_correction sae.source=toy_error_correction`` selects both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

HOOK = "blocks.0.hook_resid_pre"
NAME = "toy_error_correction"


@dataclass(frozen=True)
class ToySpec:
    d_features: int = 128  # dimensions of the input subspace (a power of 2: the Hadamard basis)
    active_per_token: int = 2
    unit: float = 3.0  # feature value of an active feature, and the staircase's step
    margin: float = 0.35  # half-width of each flat stretch, as a fraction of unit
    n_levels: int = 3  # staircase steps above 0
    readout_gain: float = 4.0  # the MLP writes gain * g(x_i) into feature i's output coordinate
    unembed_scale: float = 0.75  # sd of W_U's entries (rows of the output coordinates)
    n_ctx: int = 64
    seed: int = 0

    @property
    def n_features(self) -> int:
        return 2 * self.d_features

    @property
    def d_model(self) -> int:
        return self.d_features + self.n_features

    def check(self) -> None:
        d = self.d_features
        if d < 2 or d & (d - 1):
            raise ValueError(f"ToySpec.d_features must be a power of 2 (>= 2), got {d}")
        if not 0 < self.margin < 0.5 or self.unit <= 0 or self.n_levels < 1:
            raise ValueError("ToySpec: need 0 < margin < 0.5, unit > 0, n_levels >= 1")
        if not 1 <= self.active_per_token <= self.n_features:
            raise ValueError("ToySpec: active_per_token must be in 1..n_features")


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def feature_directions(spec: ToySpec) -> torch.Tensor:
    """``[n_features, d_model]``: the true features, unit rows in the first ``d_features``
    coordinates (float64)."""
    spec.check()
    gen = torch.Generator().manual_seed(spec.seed)
    q, r = torch.linalg.qr(torch.randn(spec.d_features, spec.d_features, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]  # a Haar-random rotation
    basis = torch.cat([torch.eye(spec.d_features, dtype=torch.float64), _hadamard(spec.d_features)]) @ q
    out = torch.zeros(spec.n_features, spec.d_model, dtype=torch.float64)
    out[:, : spec.d_features] = basis
    return out


def token_features(spec: ToySpec, d_vocab: int) -> torch.Tensor:
    """``[d_vocab, active_per_token]``: the features each token turns on (distinct per token)."""
    gen = torch.Generator().manual_seed(spec.seed + 1)
    return torch.rand(d_vocab, spec.n_features, generator=gen).argsort(dim=1)[:, : spec.active_per_token]


def staircase(x: torch.Tensor, spec: ToySpec) -> torch.Tensor:
    """The MLP's readout of one feature value (the reference the weights implement)."""
    m, u = spec.margin * spec.unit, spec.unit
    s = 1.0 / (u - 2 * m)
    return sum(s * (torch.relu(x - k * u - m) - torch.relu(x - (k + 1) * u + m)) for k in range(spec.n_levels))  # type: ignore[return-value]


def _mlp_weights(spec: ToySpec, feats_FD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    F, K, u, m = spec.n_features, spec.n_levels, spec.unit, spec.margin * spec.unit
    s = 1.0 / (u - 2 * m)
    W_in = torch.zeros(spec.d_model, 2 * F * K, dtype=torch.float64)
    b_in = torch.zeros(2 * F * K, dtype=torch.float64)
    W_out = torch.zeros(2 * F * K, spec.d_model, dtype=torch.float64)
    for i in range(F):
        for k in range(K):
            up, down = 2 * (i * K + k), 2 * (i * K + k) + 1
            W_in[:, up] = W_in[:, down] = feats_FD[i]
            b_in[up], b_in[down] = -(k * u + m), -((k + 1) * u - m)
            W_out[up, spec.d_features + i], W_out[down, spec.d_features + i] = spec.readout_gain * s, -spec.readout_gain * s
    return W_in, b_in, W_out


def toy_model(tokenizer, spec: ToySpec = ToySpec(), device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """The toy HookedTransformer (see the module docstring), with ``tokenizer``'s vocabulary."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    spec.check()
    V = len(tokenizer)
    F, D = spec.n_features, spec.d_model
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=D, n_heads=1, d_head=4, d_mlp=2 * F * spec.n_levels, n_ctx=spec.n_ctx, d_vocab=V,
        act_fn="relu", normalization_type=None, model_name=NAME, default_prepend_bos=False, seed=spec.seed,
    )  # fmt: skip
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    feats = feature_directions(spec)
    W_E = spec.unit * feats[token_features(spec, V)].sum(1)
    W_in, b_in, W_out = _mlp_weights(spec, feats)
    gen = torch.Generator().manual_seed(spec.seed + 2)
    W_U = torch.zeros(D, V, dtype=torch.float64)
    W_U[spec.d_features :] = spec.unembed_scale * torch.randn(F, V, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E.copy_(W_E)
        mlp = model.blocks[0].mlp
        mlp.W_in.copy_(W_in)
        mlp.b_in.copy_(b_in)
        mlp.W_out.copy_(W_out)
        model.unembed.W_U.copy_(W_U)
    if dtype != torch.float32:
        model.to(dtype)
    if torch.device(device).type != "cpu":
        model.to(device)
    model.cfg.device = str(device)
    model.eval()
    return model


def toy_sae(spec: ToySpec = ToySpec(), device: torch.device | str = "cpu"):
    """An sae_lens SAE at ``blocks.0.hook_resid_pre`` whose decoder rows are the true features."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    feats = feature_directions(spec).float()
    sae = StandardSAE(
        StandardSAEConfig(d_in=spec.d_model, d_sae=spec.n_features, metadata=SAEMetadata(hook_name=HOOK, model_name=NAME))
    )
    with torch.no_grad():
        sae.W_dec.copy_(feats)
        sae.W_enc.copy_(feats.T)
        sae.b_enc.fill_(-spec.unit / 2)
        sae.b_dec.zero_()
    return sae.to(str(device)).eval()
