"""A toy model of feature-specific error correction with known features, METHODS §11 [FH26].

A one-block ``transformer_lens.HookedTransformer`` whose weights are set by construction (no
training, deterministic from ``ToySpec.seed``), built in well under a second on a CPU:

- **Features.** ``n_features = 2 * d_features`` unit directions in a ``d_features``-dimensional
  input subspace of the residual stream: the standard basis and the normalised Walsh-Hadamard
  basis, both turned by one random rotation. They are in superposition (twice as many as
  dimensions) with mutual coherence exactly ``mu = 1 / sqrt(d_features)`` (0.088 at 128).
- **Embedding.** Each token turns on two distinct features of the same basis (so orthogonal
  to each other; drawn once per token) at value ``unit``: ``W_E[t] = unit (d_i + d_j)``.
  Positional embeddings and attention are zero, so the site ``blocks.0.hook_resid_pre`` at the
  last position holds exactly the last token's two features, each at exactly ``unit`` along its
  own direction; every other feature reads an interference of at most ``2 mu unit``.
- **Error correction.** The MLP reads each feature ``x_i = <d_i, resid>`` and writes
  ``readout_gain * g(x_i)`` into an output coordinate of its own (``d_features + i``, orthogonal
  to the input subspace). ``g`` reads the feature's *error*: it is 0 at both clean values, 0
  and ``unit``. It is 0 up to ``a = dead_zone * unit`` (an inactive feature ignores
  interference), 0 again at ``x = unit`` and flat there: ``g(unit + e) = (e / w)^2`` for
  ``0 <= e <= w = unit - a`` (a small bump ``-(unit - x)^2 (x - a) / w^3`` below it, between
  ``a`` and ``unit``), then linear (slope ``2 / w``). Small errors of an active feature are
  corrected to second order: its readout moves as ``e^2``, so KL moves as ``e^4``. ``g`` is
  built from ReLU neurons, one per knot of a piecewise-linear interpolation with knots about
  ``knot_spacing`` apart from ``a`` to ``unit + w`` (``toy_readout`` is that interpolation).
- **Readout.** No layer norm anywhere; ``W_U`` reads only the output coordinates (random
  ``N(0, unembed_scale^2)`` rows, ``b_U = 0``), so the clean next-token distribution is uniform
  (the toy's output carries no information about the prompt, only about errors) and a
  perturbation's logits are a linear function of the features' readouts (weight
  ``readout_gain * unembed_scale`` = 3), plus whatever it puts into the output coordinates
  directly (the residual stream passes it on, weight ``unembed_scale``: a direct, uncorrected,
  linear path). Against a uniform distribution the logit change across a large vocabulary is
  a Gaussian whose variance is the squared Euclidean norm of the readout change, so KL is a
  function of that norm alone, at any level.

Why it tests the L^p model, with a known answer: along ``u = cos(t) d_i + sin(t) d_j`` for the
two active features, the readouts move by ``(L cos t / w)^2`` and ``(L sin t / w)^2`` into
independent output directions, so KL is a function of ``L^4 (cos^4 t + sin^4 t)``: the L^p
model with ``p = 4``. A random direction moves the output
coordinates linearly (KL quadratic in ``L``, ``p = 2``) and spreads thinly over all features.
Turning a true feature toward a random direction moves ``p`` from 4 toward 2.

``toy_sae`` is an sae_lens SAE whose decoder rows *are* the true features (encoder tied,
threshold ``unit / 2``), so the ``sae`` pair source draws true features: the two active on the
base. ``model.source=toy_error_correction sae.source=toy_error_correction`` selects both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

HOOK = "blocks.0.hook_resid_pre"
NAME = "toy_error_correction"


@dataclass(frozen=True)
class ToySpec:
    d_features: int = 128  # dimensions of the input subspace (a power of 2: the Hadamard basis)
    unit: float = 3.0  # value of an active feature along its direction
    dead_zone: float = 1 / 3  # g = 0 up to dead_zone * unit
    knot_spacing: float = 0.2  # of the piecewise-linear g (one ReLU neuron per knot)
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
        if not 0 < self.dead_zone < 1 or self.unit <= 0 or not 0 < self.knot_spacing < self.unit:
            raise ValueError("ToySpec: need 0 < dead_zone < 1, unit > 0, 0 < knot_spacing < unit")


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
    """``[d_vocab, 2]``: the two features each token turns on, distinct and of the same basis."""
    gen = torch.Generator().manual_seed(spec.seed + 1)
    D = spec.d_features
    within = torch.rand(d_vocab, D, generator=gen).argsort(dim=1)[:, :2]
    basis = torch.randint(2, (d_vocab, 1), generator=gen)
    return within + D * basis


def g_exact(x: torch.Tensor, spec: ToySpec) -> torch.Tensor:
    """The readout ``g`` the MLP interpolates (see the module docstring)."""
    u = spec.unit
    a = spec.dead_zone * u
    w = u - a
    bump = -((u - x) ** 2) * (x - a) / w**3
    high = ((x - u) / w) ** 2
    return torch.where(x <= a, 0.0, torch.where(x <= u, bump, torch.where(x <= u + w, high, 1 + 2 * (x - u - w) / w)))


def knots(spec: ToySpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t, dslope)``: the knots of the interpolation and the change of slope at each, so that
    ``toy_readout(x) = sum_j dslope_j ReLU(x - t_j)``."""
    a, u = spec.dead_zone * spec.unit, spec.unit
    w = u - a
    n = max(1, round(2 * w / spec.knot_spacing))
    t = torch.linspace(a, u + w, n + 1, dtype=torch.float64)
    gt = g_exact(t, spec)
    slopes = torch.cat([torch.diff(gt) / torch.diff(t), torch.tensor([2 / w], dtype=torch.float64)])
    return t, torch.diff(slopes, prepend=torch.zeros(1, dtype=torch.float64))


def toy_readout(x: torch.Tensor, spec: ToySpec) -> torch.Tensor:
    """What the MLP computes for one feature value (before ``readout_gain``)."""
    t, ds = knots(spec)
    return (torch.relu(x.double()[..., None] - t) * ds).sum(-1)


def _mlp_weights(spec: ToySpec, feats_FD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t, ds = knots(spec)
    F, J = spec.n_features, len(t)
    W_in = feats_FD.T.repeat_interleave(J, dim=1)  # neuron i * J + j reads feature i
    b_in = -t.repeat(F)
    W_out = torch.zeros(F * J, spec.d_model, dtype=torch.float64)
    W_out[torch.arange(F * J), spec.d_features + torch.arange(F).repeat_interleave(J)] = spec.readout_gain * ds.repeat(F)
    return W_in, b_in, W_out


def toy_model(tokenizer, spec: ToySpec = ToySpec(), device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """The toy HookedTransformer (see the module docstring), with ``tokenizer``'s vocabulary."""
    from sensdir.model_backend import build_model, model_config, place

    spec.check()
    V = len(tokenizer)
    F, D = spec.n_features, spec.d_model
    cfg = model_config(
        n_layers=1, d_model=D, n_heads=1, d_head=4, d_mlp=F * len(knots(spec)[0]), n_ctx=spec.n_ctx, d_vocab=V,
        act_fn="relu", normalization_type=None, model_name=NAME, default_prepend_bos=False, seed=spec.seed,
    )  # fmt: skip
    model = build_model(cfg, tokenizer=tokenizer)
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
        mlp: Any = model.blocks[0].mlp
        mlp.W_in.copy_(W_in)
        mlp.b_in.copy_(b_in)
        mlp.W_out.copy_(W_out)
        model.unembed.W_U.copy_(W_U)
    return place(model, device, dtype)


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
