"""``real_mixture``: the difference of two real activations, METHODS §3 [LH24].

``u = (a_i - a_j) / ||a_i - a_j||`` for two distinct rows ``i != j`` of the activation pool
(``ctx.pool_PD``: other real prompts, disjoint from the base prompts): ``i`` uniform, then
``j`` uniform among the other rows (CPU generator). Like ``cov_mixture`` it never uses ``A``.
Returns unit directions (``"direction"``).

info: ``source_index`` (``i``), ``source_index_2`` (``j``), ``diff_norm = ||a_i - a_j||``.
Two distinct rows holding the same activation (duplicate prompts in the pool) give
``u = 0`` (the walk stays at ``A``), marked by ``diff_norm = 0``.

Building it with fewer than two pool rows is a ``ConfigError``. The option
``natural_length="sae_error"`` is as for ``cov_mixture``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, check_choice
from sensdir.directions.cov_mixture import NATURAL_LENGTHS, ErrorLengthOption
from sensdir.sae_ops import check_pool, draw_distinct_pool_pairs, like_base, normalise_rows
from sensdir.walk_types import DirectionContext, Proposal


@dataclass(frozen=True)
class RealMixtureConfig(DirectionConfig):
    name: str = "real_mixture"
    natural_length: str = "none"  # "none" | "sae_error" (see cov_mixture)

    def __post_init__(self) -> None:
        check_choice("real_mixture", "natural_length", self.natural_length, NATURAL_LENGTHS)


@DIRECTIONS.register("real_mixture", RealMixtureConfig)
class RealMixture(ErrorLengthOption):
    returns = "direction"
    comparison_role = "error_baseline"
    info_columns = {"source_index": "int64", "source_index_2": "int64", "diff_norm": "float64", "error_norm": "float64"}
    cfg: RealMixtureConfig

    def __init__(self, cfg: RealMixtureConfig, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        check_pool("real_mixture", ctx.pool_PD, 2)

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        pool_PD = self.ctx.pool_PD
        i_B, j_B = draw_distinct_pool_pairs(pool_PD.shape[0], base_BD.shape[0], gen)
        diff_BD = pool_PD[i_B.to(pool_PD.device)].double() - pool_PD[j_B.to(pool_PD.device)].double()
        u_BD, norm_B = normalise_rows(diff_BD)
        info = {"source_index": i_B, "source_index_2": j_B, "diff_norm": norm_B.float().cpu()}
        return self.with_error_length(Proposal(unit_BD=like_base(u_BD, base_BD, self.ctx.device), info=info), base_BD)
