"""``cov_mixture``: the improved random baseline of Lee & Heimersheim, METHODS §3 [LH24].

``u = (s1 - s2) / ||s1 - s2||`` with ``s1, s2 ~ N(mu, Sigma + eps I)`` drawn independently
(``SiteStats.sample_gaussian``, CPU generator). The base activation ``A`` is never used: the
directions of a batch depend only on the generator, so two batches of bases proposed from
the same generator state get the same directions. Returns unit directions (``"direction"``):
walk them with ``schedule=lengths`` or ``schedule=absolute``.

Draw order: the ``B`` draws of ``s1`` come first, then the ``B`` draws of ``s2`` (one call
``sample_gaussian(2B)``). ``s1 - s2 ~ N(0, 2 Sigma)``, so ``u`` has the distribution of the
direction of a ``N(0, Sigma)`` vector (not isotropic). The difference is taken in float64.

info: ``diff_norm = ||s1 - s2||``.

Option (not in METHODS): ``natural_length="sae_error"`` also writes ``natural_length_B =
||SAE(A) - A||`` in the proposal, for the error-pathology comparison [G24, LH24] (the reduce
reads the KL at that length off absolute/lengths walks). The direction itself never depends on
``A``; then the type returns a ``"scaled_direction"``, which ``schedule=relative`` walks to exactly
that length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction, check_choice
from sensdir.sae_ops import like_base, normalise_rows, sae_error
from sensdir.walk_types import DirectionContext, Proposal

NATURAL_LENGTHS = ("none", "sae_error")


class ErrorLengthOption(Direction):
    """Shared by the mixtures: ``natural_length="sae_error"`` attaches ||SAE(A) - A|| to
    each unit direction, making it a scaled direction (a relative walk then ends exactly at
    that length), for the error-pathology comparison [G24], [LH24]."""

    cfg: Any  # a mixture's config, with a ``natural_length`` field

    @classmethod
    def returns_for(cls, cfg) -> str:
        return "scaled_direction" if cfg.natural_length == "sae_error" else "direction"

    @classmethod
    def uses_sae(cls, cfg) -> bool:
        return cfg.natural_length == "sae_error"

    def __init__(self, cfg, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        check_choice(cfg.name, "natural_length", cfg.natural_length, NATURAL_LENGTHS)

    def with_error_length(self, proposal: Proposal, base_BD: Tensor) -> Proposal:
        if self.cfg.natural_length == "sae_error":
            e_BD, _ = sae_error(self.ctx.sae, base_BD)
            norm_B = e_BD.norm(dim=-1)
            proposal.natural_length_B = like_base(norm_B, base_BD, self.ctx.device)
            proposal.info["error_norm"] = norm_B.float().cpu()
        return proposal


@dataclass(frozen=True)
class CovMixtureConfig(DirectionConfig):
    name: str = "cov_mixture"
    natural_length: str = "none"  # "none" | "sae_error" (see the module docstring)

    def __post_init__(self) -> None:
        check_choice("cov_mixture", "natural_length", self.natural_length, NATURAL_LENGTHS)


@DIRECTIONS.register("cov_mixture", CovMixtureConfig)
class CovMixture(ErrorLengthOption):
    returns = "direction"
    comparison_role = "error_baseline"
    info_columns = {"diff_norm": "float64", "error_norm": "float64"}
    cfg: CovMixtureConfig

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        B = base_BD.shape[0]
        s_2BD = self.ctx.stats.sample_gaussian(2 * B, gen).double()
        u_BD, norm_B = normalise_rows(s_2BD[:B] - s_2BD[B:])
        p = Proposal(unit_BD=like_base(u_BD, base_BD, self.ctx.device), info={"diff_norm": norm_B.float().cpu()})
        return self.with_error_length(p, base_BD)
