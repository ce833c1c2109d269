"""The values that pass between the parts of a job: what the site statistics are, what a
direction type is given (``DirectionContext``) and returns (``Proposal``), and what a schedule
returns (``Walk``), METHODS §1-§3.

They live apart from the direction and schedule plugins so that each side, and the engine and
the reducers, can name them without importing the other's package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from sae_lens import SAE


@dataclass(frozen=True)
class SiteStats:
    """Statistics of real activations at the site, from ``n_stats`` prompts disjoint from the
    base prompts (METHODS §1)."""

    mu_D: Float[Tensor, " d"]
    cov_DD: Float[Tensor, "d d"]  # Sigma + eps * I, positive definite
    chol_DD: Float[Tensor, "d d"]  # lower Cholesky factor of cov_DD
    median_norm: float  # median ||A|| over the stats activations
    firing_freq_S: Float[Tensor, " d_sae"]  # fraction of stats activations where latent > 0
    # the same as integer counts: frequency neighbours compare these, so that ties are exact
    # and go to the smaller latent index (a float count/n would break them by rounding)
    firing_count_S: Int[Tensor, " d_sae"] | None = None

    @property
    def dead_S(self) -> Tensor:
        return self.firing_freq_S == 0

    def sample_gaussian(self, n: int, gen: torch.Generator) -> Float[Tensor, "n d"]:
        """``n`` draws of N(mu, Sigma), sampled on the CPU generator for reproducibility."""
        z_ND = torch.randn(n, self.mu_D.shape[0], generator=gen, dtype=torch.float64)
        z_ND = z_ND.to(device=self.chol_DD.device, dtype=self.chol_DD.dtype)
        return self.mu_D + z_ND @ self.chol_DD.T


@dataclass
class DirectionContext:
    """Everything a direction type may use, built once per job."""

    sae: SAE
    stats: SiteStats
    pool_PD: Float[Tensor, "pool d"]  # site activations of other real prompts (last position)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # For types that fit something on the model first (probe, supervised): the model and the
    # site (sensdir.site.Site). None in unit tests of types that don't need them.
    model: Any = None
    site: Any = None


@dataclass
class Proposal:
    """A batch of targets or unit directions, one per base activation.

    ``info`` holds per-row facts written to the shards (e.g. ``target_norm``, ``target_l0``,
    ``anchor_cos``, ``source_index``): each value is a tensor or list of length ``B``.
    """

    target_BD: Float[Tensor, "B d"] | None = None
    unit_BD: Float[Tensor, "B d"] | None = None
    natural_length_B: Float[Tensor, " B"] | None = None  # e.g. ||SAE(A) - A|| for sae_error
    # Where the walk starts, patched into the base's context, if not at A itself (the
    # plateau experiment starts from other real, synthetic or random activations).
    start_BD: Float[Tensor, "B d"] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.target_BD is None) == (self.unit_BD is None):
            raise ValueError("a Proposal has exactly one of target_BD and unit_BD")


@dataclass
class Walk:
    """Step 0 is always the unperturbed activation (METHODS §2)."""

    acts_BKD: Float[Tensor, "B K d"]
    grid_BK: Float[Tensor, "B K"]  # interpolation t, or distance from A
    valid_BK: Bool[Tensor, "B K"]  # False for steps the schedule drops (kept as null in shards)
