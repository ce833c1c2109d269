"""``sae_error``: along the SAE's reconstruction error, METHODS §3 [G24], [LH24].

``e = SAE(A) - A`` with ``SAE(A) = decode(encode(A))`` (decoder bias included, the SAE's error
term never added; as ``sae_recon``). Returns ``"scaled_direction"``: ``u = e / ||e||`` and
``natural_length_B = ||e||``. So

- ``schedule=relative`` walks ``A -> A + ||e|| u``: its last step is ``SAE(A)`` (up to float
  rounding), i.e. the walk substitutes the reconstruction for the activation [G24];
- ``schedule=lengths`` / ``absolute`` walk along ``u`` to their own lengths.

A perfect reconstruction (``e = 0``) gives ``u = 0`` and natural length 0: every step is ``A``.
The error is computed in float64, then cast to the base activations' dtype.

info: ``error_norm = ||e||`` (the same number as the ``natural_length`` column), ``base_l0``
(L0 of ``encode(A)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.sae_ops import l0, normalise_rows, sae_error, scaled_direction
from sensdir.walk_types import Proposal


@dataclass(frozen=True)
class SaeErrorConfig(DirectionConfig):
    name: str = "sae_error"


@DIRECTIONS.register("sae_error", SaeErrorConfig)
class SaeError(Direction):
    returns = "scaled_direction"
    comparison_role = "error"
    info_columns = {"error_norm": "float64", "base_l0": "int64"}

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        e_BD, f_BS = sae_error(self.ctx.sae, base_BD)
        u_BD, norm_B = normalise_rows(e_BD)
        return scaled_direction(u_BD, norm_B, base_BD, self.ctx.device, {"error_norm": norm_B.float().cpu(), "base_l0": l0(f_BS)})
