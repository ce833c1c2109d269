"""What a direction type is given and what it returns.

A direction type turns base activations ``A`` into either a *target* ``T`` (the walk goes
toward it) or a *unit direction* ``u`` (the walk goes along it), METHODS §1 and §3.
Randomness comes only from the ``torch.Generator`` passed in, which the job seeds once
from the config: same config and seed, same proposals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.registry import Registry

if TYPE_CHECKING:
    from sae_lens import SAE

DIRECTIONS: Registry[type["Direction"]] = Registry("direction", "sensdir.directions")


@dataclass(frozen=True)
class SiteStats:
    """Statistics of real activations at the site, from ``n_stats`` prompts disjoint from the
    base prompts (METHODS §1)."""

    mu_D: Float[Tensor, " d"]
    cov_DD: Float[Tensor, "d d"]  # Sigma + eps * I, positive definite
    chol_DD: Float[Tensor, "d d"]  # lower Cholesky factor of cov_DD
    median_norm: float  # median ||A|| over the stats activations
    firing_freq_S: Float[Tensor, " d_sae"]  # fraction of stats activations where latent > 0

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

    sae: "SAE"
    stats: SiteStats
    pool_PD: Float[Tensor, "pool d"]  # site activations of other real prompts (last position)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # For types that fit something on the model first (probe, supervised): the model and the
    # site (sensdir.engine.Site). None in unit tests of types that don't need them.
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


class Direction(ABC):
    """Base class of direction types. Subclasses register with ``@DIRECTIONS.register``."""

    #: "target" if ``propose`` returns targets, "direction" if it returns unit directions,
    #: "scaled_direction" if unit directions with a natural length each (``natural_length_B``,
    #: e.g. ||SAE(A) - A||), which a relative walk goes along up to that length.
    returns: ClassVar[str] = "target"

    def __init__(self, cfg: DirectionConfig, ctx: DirectionContext):
        self.cfg = cfg
        self.ctx = ctx

    @classmethod
    def returns_for(cls, cfg: DirectionConfig) -> str:
        """What ``propose`` returns under ``cfg`` (checked against the schedule at startup)."""
        return cls.returns

    @abstractmethod
    def propose(
        self,
        base_BD: Float[Tensor, "B d"],
        base_index_B: Int[Tensor, " B"],
        gen: torch.Generator,
    ) -> Proposal:
        """Targets or directions for the base activations ``base_BD``.

        ``base_index_B`` identifies each base prompt (so a type that draws "another" prompt
        can avoid drawing the same one); ``gen`` is a CPU generator.
        """
