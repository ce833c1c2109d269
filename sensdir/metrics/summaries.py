"""Per-row summaries of a curve (METHODS §4), one implementation each: the job computes them
and the synthetic sweeps of the tests and benchmark reuse them."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sensdir.config import MetricConfig
from sensdir.metrics.base import Summary


def _valid_length(valid_NK: Bool[Tensor, "N K"]) -> Int[Tensor, " N"]:
    # Schedules drop a suffix of steps; the valid part is a prefix.
    return valid_NK.long().sum(dim=-1)


def max_slope_step(
    y_NK: Float[Tensor, "N K"], valid_NK: Bool[Tensor, "N K"] | None = None, threshold: float = 0.02, tie_rtol: float = 0.0
) -> Int[Tensor, " N"]:
    """Blowup location [GP24]: index of the largest single-step rise of ``y``.

    ``d = diff(y)`` with ``d[0]`` prepended, so ``d[k]`` is the change into step ``k``;
    if no ``d > threshold``, the answer is the last step. On a curve truncated by the
    schedule (METHODS §2), "last step" is the last valid one (choice: the reference only
    had full curves) and dropped steps never count.

    (choice) Rises within ``tie_rtol`` (relative) of the largest are ties, and the earliest
    wins: float32 rounding differs with the batch shape by ~1e-6, which would otherwise let
    the batch size pick between two near-equal rises.
    """
    if valid_NK is None:
        valid_NK = torch.ones_like(y_NK, dtype=torch.bool)
    d_NK = torch.diff(y_NK, dim=-1)
    d_NK = torch.cat([d_NK[:, :1], d_NK], dim=-1)
    d_NK = torch.where(valid_NK, d_NK, torch.full_like(d_NK, -torch.inf))
    d_NK = torch.nan_to_num(d_NK, nan=-torch.inf)
    last_N = (_valid_length(valid_NK) - 1).clamp_min(0)
    any_N = (d_NK > threshold).any(dim=-1)
    dmax_N = d_NK.max(dim=-1).values
    near_NK = d_NK >= (dmax_N - tie_rtol * dmax_N.abs())[:, None]
    return torch.where(any_N, near_NK.long().argmax(dim=-1), last_N)


def at_last_valid_step(value_N: Int[Tensor, " N"], valid_NK: Bool[Tensor, "N K"]) -> Bool[Tensor, " N"]:
    """Censored max-slope steps (METHODS §10): at the last valid step, which is also where the
    no-rise fallback puts them."""
    return value_N == (_valid_length(valid_NK) - 1).clamp_min(0)


def never_reached(value_N: Int[Tensor, " N"], valid_NK: Bool[Tensor, "N K"]) -> Bool[Tensor, " N"]:
    """Censored plateau lengths: the threshold was never reached inside the walk."""
    return value_N == _valid_length(valid_NK)


def plateau_length(
    l2_NK: Float[Tensor, "N K"], valid_NK: Bool[Tensor, "N K"] | None = None, threshold: float = 20.0
) -> Int[Tensor, " N"]:
    """Plateau length [GP24]: first step where ``l2 >= threshold``, else the number of
    (valid) steps."""
    if valid_NK is None:
        valid_NK = torch.ones_like(l2_NK, dtype=torch.bool)
    hit_NK = (l2_NK >= threshold) & valid_NK
    return torch.where(hit_NK.any(dim=-1), hit_NK.long().argmax(dim=-1), _valid_length(valid_NK))


def max_slope(metric: str, label: str) -> Summary:
    """The max-slope step of ``metric``'s curve, column ``ms_step_<metric>``."""
    return Summary(
        column=f"ms_step_{metric}",
        compute=lambda y, valid, cfg: max_slope_step(y, valid, cfg.ms_threshold, cfg.ms_tie_rtol),
        figure="ms_step",
        label=f"{label} max-slope step",
        censored=at_last_valid_step,
    )


def plateau(column: str = "plateau_len") -> Summary:
    """Steps before the curve first reaches ``metric.plateau_l2`` (resolved to an absolute
    threshold by the job, ``sensdir.metrics.thresholds``). Meaningful only for walks in
    absolute steps (METHODS §10): on a relative walk it is the threshold over the curve's gain
    per step, so the reduce reports it for ``distance`` grids only."""

    def compute(y: Tensor, valid: Tensor, cfg: MetricConfig) -> Tensor:
        return plateau_length(y, valid, cfg.plateau_l2)

    return Summary(
        column=column, compute=compute, figure="plateau", label="plateau length", censored=never_reached, grid_kinds=("distance",)
    )
