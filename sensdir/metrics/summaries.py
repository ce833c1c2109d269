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
    y_NK: Float[Tensor, "N K"], valid_NK: Bool[Tensor, "N K"] | None = None, threshold: float = 0.02
) -> Int[Tensor, " N"]:
    """Blowup location [GP24]: index of the largest single-step rise of ``y``.

    ``d = diff(y)`` with ``d[0]`` prepended, so ``d[k]`` is the change into step ``k``;
    if no ``d > threshold``, the answer is the last step. On a curve truncated by the
    schedule (METHODS §2), "last step" is the last valid one (choice: the reference only
    had full curves) and dropped steps never count.
    """
    if valid_NK is None:
        valid_NK = torch.ones_like(y_NK, dtype=torch.bool)
    d_NK = torch.diff(y_NK, dim=-1)
    d_NK = torch.cat([d_NK[:, :1], d_NK], dim=-1)
    d_NK = torch.where(valid_NK, d_NK, torch.full_like(d_NK, -torch.inf))
    d_NK = torch.nan_to_num(d_NK, nan=-torch.inf)
    last_N = (_valid_length(valid_NK) - 1).clamp_min(0)
    any_N = (d_NK > threshold).any(dim=-1)
    return torch.where(any_N, d_NK.argmax(dim=-1), last_N)


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
        compute=lambda y, valid, cfg: max_slope_step(y, valid, cfg.ms_threshold),
        figure="ms_step",
        label=f"{label} max-slope step",
    )


def plateau(column: str = "plateau_len") -> Summary:
    """Steps before the curve first reaches ``metric.plateau_l2``."""

    def compute(y: Tensor, valid: Tensor, cfg: MetricConfig) -> Tensor:
        return plateau_length(y, valid, cfg.plateau_l2)

    return Summary(column=column, compute=compute, figure="plateau", label="plateau length")
