"""SAE and activation-pool operations shared by the direction types (METHODS §3) and the
studies: encode / decode on the SAE's device, L0, the SAE error, nearest latents in firing
frequency, draws from the activation pool, and the casts and norms every proposal records.

They are kept out of the direction plugins so that a type file holds only its definition and
the studies need not import a plugin to encode with an SAE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sensdir.errors import ConfigError
from sensdir.walk_types import Proposal

if TYPE_CHECKING:
    from sae_lens import SAE


# --------------------------------------------------------------------------- SAE


def sae_encode(sae: SAE, x_BD: Float[Tensor, "B d"]) -> Float[Tensor, "B d_sae"]:
    """Latent codes ``f = sae.encode(x)``, computed on the SAE's device and dtype."""
    w = sae.W_dec
    with torch.no_grad():
        return sae.encode(x_BD.to(device=w.device, dtype=w.dtype))


def sae_decode(sae: SAE, f_BS: Float[Tensor, "B d_sae"]) -> Float[Tensor, "B d"]:
    """``sae.decode(f)`` (decoder bias included), on the SAE's device and dtype."""
    w = sae.W_dec
    with torch.no_grad():
        return sae.decode(f_BS.to(device=w.device, dtype=w.dtype))


def l0(f_BS: Float[Tensor, "B d_sae"]) -> Int[Tensor, " B"]:
    """Number of nonzero latents per row (on the CPU)."""
    return (f_BS != 0).sum(dim=-1).cpu()


def sae_error(sae: SAE, base_BD: Float[Tensor, "B d"]) -> tuple[Float[Tensor, "B d"], Float[Tensor, "B d_sae"]]:
    """``(e, f)``: the SAE error ``e = SAE(A) - A`` in float64 and the codes ``f = encode(A)``,
    on the SAE's device.

    ``SAE(A) = decode(encode(A))`` (decoder bias included, the SAE's error term never added),
    the same reconstruction as ``sae_recon``.
    """
    f_BS = sae_encode(sae, base_BD)
    recon_BD = sae_decode(sae, f_BS)
    e_BD = recon_BD.double() - base_BD.to(device=recon_BD.device).double()
    return e_BD, f_BS


def nearest_in_frequency(
    freq_S: Float[Tensor, " d_sae"], i: int, excluded_S: Bool[Tensor, " d_sae"], k: int
) -> Int[Tensor, " k"]:
    """The ``k`` non-excluded latents closest to latent ``i`` in firing frequency.

    Order: increasing ``|freq_j - freq_i|``, ties broken by increasing index ``j``. Returns
    fewer than ``k`` latents when fewer are not excluded (possibly none). ``freq_S`` and
    ``excluded_S`` are CPU tensors; the distances are taken in float64.
    """
    dist_S = (freq_S.double() - float(freq_S[i])).abs()
    dist_S[excluded_S] = float("inf")
    n = min(k, int((~excluded_S).sum()))
    if n <= 0:
        return torch.empty(0, dtype=torch.long)
    # Every latent at distance <= the n-th smallest is a candidate (this keeps all ties at the
    # boundary); nonzero lists them by increasing index, so a stable sort on the distance
    # breaks ties by index. (topk is much faster than kthvalue on the CPU.)
    kth = torch.topk(dist_S, n, largest=False, sorted=False).values.max()
    cand_K = torch.nonzero(dist_S <= kth).squeeze(1)
    order_K = torch.sort(dist_S[cand_K], stable=True).indices
    return cand_K[order_K[:n]]


def cpu_firing(stats) -> tuple[Float[Tensor, " d_sae"], Bool[Tensor, " d_sae"]]:
    """``(firing key, dead mask)`` of ``SiteStats`` on the CPU, where the synthetic types'
    index bookkeeping runs (loops over the few active latents per base). The key orders latents
    by firing frequency: the integer counts where the stats have them (exact ties, broken by
    index), else the frequencies; float64 either way."""
    key = stats.firing_count_S if stats.firing_count_S is not None else stats.firing_freq_S
    return key.detach().to("cpu", torch.float64), stats.dead_S.detach().cpu()


# --------------------------------------------------------------------------- the activation pool


def check_pool(type_name: str, pool_PD: Tensor, need: int) -> None:
    """``ConfigError`` when the activation pool has fewer than ``need`` rows (raised when the
    direction is built, before any walk)."""
    if pool_PD.shape[0] < need:
        raise ConfigError(f"{type_name} needs at least {need} pool activation(s) (data.n_pool), got {pool_PD.shape[0]}")


def draw_pool_rows(n_pool: int, n: int, gen: torch.Generator) -> Int[Tensor, " n"]:
    """``n`` pool row indices, uniform with replacement, from the CPU generator ``gen``.

    The pool is built from prompts disjoint from the base prompts, so any row is "another"
    prompt; ``base_index_B`` is not needed to avoid the base itself.
    """
    if n_pool == 0:
        raise ValueError("the activation pool is empty: real/sae_recon targets need n_pool > 0")
    return torch.randint(n_pool, (n,), generator=gen)


def draw_from_pool(pool_PD: Float[Tensor, "P d"], n: int, gen: torch.Generator) -> tuple[Int[Tensor, " n"], Float[Tensor, "n d"]]:
    """``(source_index, rows)``: ``n`` rows of the pool drawn by :func:`draw_pool_rows`."""
    src_N = draw_pool_rows(pool_PD.shape[0], n, gen)
    return src_N, pool_PD[src_N.to(pool_PD.device)]


def draw_distinct_pool_pairs(n_pool: int, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` pairs ``(i, j)`` of pool rows with ``i != j``, each pair uniform among the ordered
    pairs of distinct rows: ``i`` uniform, then ``j`` uniform among the other ``n_pool - 1``."""
    if n_pool < 2:
        raise ValueError(f"two distinct pool rows need n_pool >= 2, got {n_pool}")
    i_N = torch.randint(n_pool, (n,), generator=gen)
    j_N = (i_N + 1 + torch.randint(n_pool - 1, (n,), generator=gen)) % n_pool
    return i_N, j_N


# --------------------------------------------------------------------------- proposal rows


def like_base(x_BD: Tensor, like_BD: Float[Tensor, "B d"], device: torch.device) -> Tensor:
    """Targets, unit directions or natural lengths in the base activations' dtype, on the job's
    device (the walk mixes them with the base activations)."""
    return x_BD.to(device=device, dtype=like_BD.dtype)


def scaled_direction(u_BD: Tensor, length_B: Tensor, like_BD: Tensor, device: torch.device, info: dict) -> Proposal:
    """A proposal of unit directions walked to a natural length each (e.g. ||SAE(A) - A||)."""
    return Proposal(unit_BD=like_base(u_BD, like_BD, device), natural_length_B=like_base(length_B, like_BD, device), info=info)


def match_real_norm(t_BD: Tensor, pool_PD: Tensor, gen: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """Targets rescaled to the norms of pool rows drawn as ``real`` draws its targets (uniform,
    with replacement), and the facts to record: the pool row and the norm before matching."""
    src_B = draw_pool_rows(pool_PD.shape[0], t_BD.shape[0], gen)
    want_B = pool_PD[src_B.to(pool_PD.device)].double().norm(dim=-1).to(t_BD.device)
    have_B = t_BD.double().norm(dim=-1)
    scaled_BD = (t_BD.double() * (want_B / have_B.clamp_min(1e-12))[:, None]).to(t_BD.dtype)
    return scaled_BD, {"norm_source_index": src_B, "unmatched_target_norm": have_B.float().cpu()}


def target_norm(t_BD: Float[Tensor, "B d"]) -> Float[Tensor, " B"]:
    return t_BD.detach().float().norm(dim=-1).cpu()


def normalise_rows(v_BD: Float[Tensor, "B d"]) -> tuple[Float[Tensor, "B d"], Float[Tensor, " B"]]:
    """``(v / ||v||, ||v||)`` per row, in float64 on ``v``'s device.

    A zero row gives a zero "direction" (not NaN): the walk then stays at ``A``, and the norm
    ``0`` recorded next to it marks the row.
    """
    v_BD = v_BD.detach().double()
    norm_B = v_BD.norm(dim=-1)
    u_BD = v_BD / norm_B.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
    return u_BD, norm_B
