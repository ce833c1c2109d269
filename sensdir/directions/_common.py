"""Helpers shared by the unit-direction types of METHODS §3 ([LH24], [G24]).

Not a plugin (the registry skips modules starting with ``_``). The SAE and pool helpers of the
target types live in ``sensdir.directions.sae_recon`` and are reused from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from sensdir.directions.sae_recon import draw_pool_rows, l0, sae_decode, sae_encode
from sensdir.errors import ConfigError

if TYPE_CHECKING:
    from sae_lens import SAE

__all__ = [
    "like_base",
    "check_choice",
    "check_pool",
    "draw_pool_rows",
    "draw_distinct_pool_pairs",
    "l0",
    "normalise_rows",
    "sae_error",
]


def check_choice(type_name: str, field: str, value: str, choices: tuple[str, ...]) -> None:
    """``ConfigError`` (a ``ValueError``) naming the valid choices when ``value`` is not one."""
    if value not in choices:
        raise ConfigError(f"{type_name}: {field}={value!r} is not valid; valid choices: {', '.join(choices)}")


def check_pool(type_name: str, pool_PD: Tensor, need: int) -> None:
    """``ConfigError`` when the activation pool has fewer than ``need`` rows (raised when the
    direction is built, before any walk)."""
    if pool_PD.shape[0] < need:
        raise ConfigError(
            f"{type_name} needs at least {need} pool activation(s) (data.n_pool), got {pool_PD.shape[0]}"
        )


def normalise_rows(v_BD: Float[Tensor, "B d"]) -> tuple[Float[Tensor, "B d"], Float[Tensor, " B"]]:
    """``(v / ||v||, ||v||)`` per row, in float64 on ``v``'s device.

    A zero row gives a zero "direction" (not NaN): the walk then stays at ``A``, and the norm
    ``0`` recorded next to it marks the row.
    """
    v_BD = v_BD.detach().double()
    norm_B = v_BD.norm(dim=-1)
    u_BD = v_BD / norm_B.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
    return u_BD, norm_B


def like_base(
    u_BD: Float[Tensor, "B d"], like_BD: Float[Tensor, "B d"], device: torch.device
) -> Float[Tensor, "B d"]:
    """Unit directions (or natural lengths) in the base activations' dtype, on the job's device."""
    return u_BD.to(device=device, dtype=like_BD.dtype)


def draw_distinct_pool_pairs(n_pool: int, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` pairs ``(i, j)`` of pool rows with ``i != j``, each pair uniform among the ordered
    pairs of distinct rows: ``i`` uniform, then ``j`` uniform among the other ``n_pool - 1``."""
    if n_pool < 2:
        raise ValueError(f"two distinct pool rows need n_pool >= 2, got {n_pool}")
    i_N = torch.randint(n_pool, (n,), generator=gen)
    j_N = (i_N + 1 + torch.randint(n_pool - 1, (n,), generator=gen)) % n_pool
    return i_N, j_N


def sae_error(
    sae: "SAE", base_BD: Float[Tensor, "B d"]
) -> tuple[Float[Tensor, "B d"], Float[Tensor, "B d_sae"]]:
    """``(e, f)``: the SAE error ``e = SAE(A) - A`` in float64 and the codes ``f = encode(A)``,
    on the SAE's device.

    ``SAE(A) = decode(encode(A))`` (decoder bias included, the SAE's error term never added),
    the same reconstruction as ``sae_recon``.
    """
    f_BS = sae_encode(sae, base_BD)
    recon_BD = sae_decode(sae, f_BS)
    e_BD = recon_BD.double() - base_BD.to(device=recon_BD.device).double()
    return e_BD, f_BS
