"""``sae_recon``: the SAE reconstruction of another real activation, METHODS §3 [GP24].

``T = SAE(B) = decode(encode(B))`` for ``B`` a uniformly drawn row of the pool (activations of
other real prompts, disjoint from the base prompts). The decoder bias is included, as in
``sae.decode``. The SAE's error term is never added (``sae.forward`` would add it when
``use_error_term`` is on), so this is always the plain reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.sae_ops import draw_from_pool, l0, like_base, sae_decode, sae_encode, target_norm
from sensdir.walk_types import Proposal


@dataclass(frozen=True)
class SaeReconConfig(DirectionConfig):
    name: str = "sae_recon"


@DIRECTIONS.register("sae_recon", SaeReconConfig)
class SaeRecon(Direction):
    returns = "target"
    info_columns = {"source_index": "int64", "target_norm": "float64", "target_l0": "int64"}

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        src_B, b_BD = draw_from_pool(self.ctx.pool_PD, base_BD.shape[0], gen)
        f_BS = sae_encode(self.ctx.sae, b_BD)
        t_BD = like_base(sae_decode(self.ctx.sae, f_BS), base_BD, self.ctx.device)
        info = {"source_index": src_B, "target_norm": target_norm(t_BD), "target_l0": l0(f_BS)}
        return Proposal(target_BD=t_BD, info=info)
