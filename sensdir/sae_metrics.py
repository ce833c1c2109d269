"""Evaluation metrics for sparse autoencoders (SAEs).

All functions take plain tensors, so they work for any SAE (sae_lens or otherwise). Shared by
the embedded SAE trainer (its cards) and the ``sae_quality`` study, so it is not part of the
embedded package.
Activations are ``[..., d]``; every leading dimension is treated as a sample axis.

Definitions (sums run over every sample and every coordinate):

* ``fvu(x, x_hat)`` -- fraction of variance unexplained
  ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``, where ``mean(x)`` is the per-coordinate
  mean over the samples. 0 is a perfect reconstruction; predicting the mean gives 1.
* ``gamma(x, x_hat)`` -- relative reconstruction bias ``E[x_hat . x] / E[||x||^2]``
  (the least-squares scale ``g`` minimising ``E||g x - x_hat||^2``). ``gamma < 1`` means the
  reconstruction is shrunk towards zero (the usual effect of an L1 penalty).
* ``ce_loss_recovered(ce_clean, ce_reconstruction, ce_zero_ablation)`` --
  ``(CE_zero_ablation - CE_with_reconstruction) / (CE_zero_ablation - CE_clean)``:
  1 when splicing the reconstruction in costs nothing, 0 when it is as bad as zeroing the
  activation at that site.
* ``l0(feature_acts)`` -- mean number of non-zero latents per sample.
* ``firing_frequency(feature_acts)`` -- per-latent fraction of samples where it is non-zero.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "fvu",
    "gamma",
    "ce_loss_recovered",
    "l0",
    "firing_frequency",
    "dead_fraction",
    "ReconstructionStats",
]


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1]).to(torch.float64)


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained, ``sum||x - x_hat||^2 / sum||x - mean(x)||^2``."""
    if x.shape != x_hat.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    xf, hf = _flat(x), _flat(x_hat)
    resid = (xf - hf).pow(2).sum()
    total = (xf - xf.mean(0, keepdim=True)).pow(2).sum()
    if total == 0:
        raise ValueError("x has zero variance; FVU is undefined")
    return float(resid / total)


def gamma(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Relative reconstruction bias ``E[x_hat . x] / E[||x||^2]`` (< 1: shrinkage)."""
    if x.shape != x_hat.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    xf, hf = _flat(x), _flat(x_hat)
    denom = xf.pow(2).sum()
    if denom == 0:
        raise ValueError("x is identically zero; gamma is undefined")
    return float((hf * xf).sum() / denom)


def ce_loss_recovered(ce_clean: float, ce_reconstruction: float, ce_zero_ablation: float) -> float:
    """``(CE_zero - CE_recon) / (CE_zero - CE_clean)``; 1 = lossless splice, 0 = as bad as zeroing."""
    denom = float(ce_zero_ablation) - float(ce_clean)
    if denom == 0 or not math.isfinite(denom):
        raise ValueError("zero ablation does not change the loss; CE-loss recovered is undefined")
    return (float(ce_zero_ablation) - float(ce_reconstruction)) / denom


def l0(feature_acts: torch.Tensor) -> float:
    """Mean number of non-zero latents per sample."""
    f = feature_acts.reshape(-1, feature_acts.shape[-1])
    return float((f != 0).sum(-1).to(torch.float64).mean())


def firing_frequency(feature_acts: torch.Tensor) -> torch.Tensor:
    """Per-latent fraction of samples on which the latent is non-zero (float32, ``[d_sae]``)."""
    f = feature_acts.reshape(-1, feature_acts.shape[-1])
    return (f != 0).to(torch.float64).mean(0).to(torch.float32)


def dead_fraction(freq: torch.Tensor) -> float:
    """Fraction of latents that never fired (``freq == 0``) on the measured sample."""
    return float((freq == 0).to(torch.float64).mean())


class ReconstructionStats:
    """Streaming accumulator giving the same FVU, gamma, L0 and firing frequencies as the
    whole-tensor functions above, batch by batch (for evaluation sets that do not fit at once).

    FVU uses ``sum||x - mean||^2 = sum||x||^2 - n ||mean||^2`` accumulated in float64.
    """

    def __init__(self, d_sae: int):
        self.n = 0
        self.sum_x: torch.Tensor | None = None
        self.sum_sq_x = 0.0
        self.sum_sq_err = 0.0
        self.sum_dot = 0.0
        self.sum_l0 = 0.0
        self.fire_counts = torch.zeros(d_sae, dtype=torch.float64)

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor, feature_acts: torch.Tensor) -> None:
        xf, hf = _flat(x), _flat(x_hat)
        f = feature_acts.reshape(-1, feature_acts.shape[-1]) != 0
        self.n += xf.shape[0]
        s = xf.sum(0).cpu()
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.sum_sq_x += float(xf.pow(2).sum())
        self.sum_sq_err += float((xf - hf).pow(2).sum())
        self.sum_dot += float((xf * hf).sum())
        self.sum_l0 += float(f.sum())
        self.fire_counts += f.sum(0).to(torch.float64).cpu()

    def fvu(self) -> float:
        assert self.sum_x is not None and self.n > 0
        mean = self.sum_x / self.n
        total = self.sum_sq_x - self.n * float(mean.pow(2).sum())
        return self.sum_sq_err / total

    def gamma(self) -> float:
        return self.sum_dot / self.sum_sq_x

    def l0(self) -> float:
        return self.sum_l0 / self.n

    def firing_frequency(self) -> torch.Tensor:
        return (self.fire_counts / self.n).to(torch.float32)
