"""``synth_baseline``: the "bag of latents" synthetic activation, METHODS §3 [GP24].

``f = SAE.encode(A)``. For each active latent ``i`` (``f_i != 0``) in increasing index order,
the value ``f_i`` moves to a latent ``j`` drawn uniformly among the ``n_neighbours`` (10)
latents closest to ``i`` in firing frequency; ``T = SAE.decode(f')`` (decoder bias included).
Each moved value lands on its own latent, so ``f'`` has the same L0 and the same multiset of
nonzero values as ``f``; only *which* latents are active changes.

Reading of the spec used here:

- **closest in firing frequency** = smallest ``|freq_j - freq_i|`` (absolute difference of the
  firing frequencies in ``SiteStats.firing_freq_S``, in float64), ties broken by the smaller
  latent index (``nearest_in_frequency``);
- the exclusions (``i`` itself, dead latents, latents already chosen for this base) are applied
  *before* taking the nearest ``n_neighbours``, so there are ``n_neighbours`` candidates
  whenever that many latents remain;
- if fewer remain, ``j`` is drawn among all that remain; if none remain (the SAE has no more
  live latents than the base's L0), ``propose`` raises ``ValueError``;
- an active latent that is dead in the stats (it fired on this base but never on the stats
  prompts) is moved like any other; it can never be a destination.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import bounded
from sensdir.directions.base import DIRECTIONS, Direction, NormMatchableConfig
from sensdir.sae_ops import cpu_firing, l0, like_base, match_real_norm, nearest_in_frequency, sae_decode, sae_encode, target_norm
from sensdir.walk_types import DirectionContext, Proposal


@dataclass
class SynthCodes:
    """Codes of one batch: ``f`` of the bases, ``f'`` of the targets, and the moves made.

    ``moves[b]`` lists ``(i, j)``: the value of latent ``i`` in ``f[b]`` went to latent ``j`` in
    ``f'[b]``, in the order the moves were made.
    """

    f_BS: Float[Tensor, "B d_sae"]
    f_new_BS: Float[Tensor, "B d_sae"]
    moves: list[list[tuple[int, int]]]


@dataclass(frozen=True)
class SynthBaselineConfig(NormMatchableConfig):
    name: str = "synth_baseline"
    n_neighbours: int = bounded(10, ge=1)


@DIRECTIONS.register("synth_baseline", SynthBaselineConfig)
class SynthBaseline(Direction):
    returns = "target"
    info_columns = {"target_norm": "float64", "target_l0": "int64", "base_l0": "int64"}
    cfg: SynthBaselineConfig

    def __init__(self, cfg: SynthBaselineConfig, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        if cfg.n_neighbours < 1:
            raise ValueError(f"synth_baseline: n_neighbours must be >= 1, got {cfg.n_neighbours}")
        self.freq_S, self.dead_S = cpu_firing(ctx.stats)

    def synthesize(self, f_BS: Float[Tensor, "B d_sae"], gen: torch.Generator) -> SynthCodes:
        """Move every active latent of each row of ``f_BS`` (see the module docstring)."""
        f_cpu_BS = f_BS.detach().cpu()
        f_new_BS = torch.zeros_like(f_cpu_BS)
        moves: list[list[tuple[int, int]]] = []
        for b in range(f_cpu_BS.shape[0]):
            used_S = self.dead_S.clone()  # dead latents and latents already chosen
            row_moves: list[tuple[int, int]] = []
            for i in torch.nonzero(f_cpu_BS[b]).squeeze(1).tolist():  # increasing index
                excluded_S = used_S.clone()
                excluded_S[i] = True
                cand_K = nearest_in_frequency(self.freq_S, i, excluded_S, self.cfg.n_neighbours)
                if cand_K.numel() == 0:
                    raise ValueError(
                        f"synth_baseline: no live unused latent left to move latent {i} to "
                        f"(base row {b}, L0 {int((f_cpu_BS[b] != 0).sum())}, "
                        f"{int((~self.dead_S).sum())} live latents)"
                    )
                j = int(cand_K[torch.randint(cand_K.numel(), (1,), generator=gen)])
                f_new_BS[b, j] = f_cpu_BS[b, i]
                used_S[j] = True
                row_moves.append((i, j))
            moves.append(row_moves)
        return SynthCodes(f_cpu_BS, f_new_BS, moves)

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        codes = self.synthesize(sae_encode(self.ctx.sae, base_BD), gen)
        t_BD = like_base(sae_decode(self.ctx.sae, codes.f_new_BS), base_BD, self.ctx.device)
        matched: dict = {}
        if self.cfg.match_norm:
            t_BD, matched = match_real_norm(t_BD, self.ctx.pool_PD, gen)
        info = {
            **matched,
            "target_norm": target_norm(t_BD),
            # L0 of the code T is decoded from (equal to base_l0 by construction), not of encode(T)
            "target_l0": l0(codes.f_new_BS),
            "base_l0": l0(codes.f_BS),
        }
        return Proposal(target_BD=t_BD, info=info)
