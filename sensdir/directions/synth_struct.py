"""``synth_struct``: the structured synthetic activation, METHODS §3 [GP24].

With ``f = SAE.encode(A)`` and unit decoder rows ``d_j = W_dec[j] / ||W_dec[j]||``:

1. ``t = argmax f`` (the top latent; the smallest index among equal maxima);
2. anchor ``c``: among the ``n_anchor_candidates`` (100) latents closest to ``t`` in firing
   frequency, excluding ``t`` and dead latents (``nearest_in_frequency``: smallest
   ``|freq_j - freq_t|``, ties by index), the one with ``cos(d_t, d_c)`` closest to
   ``anchor_cos`` (0.42); ties go to the candidate closer in frequency (then smaller index);
3. for each active ``i``: ``s_i = cos(d_t, d_i)``;
4. the active latents are moved one at a time, **in decreasing order of ``f_i``** (ties by
   increasing index), so ``t`` comes first and stronger latents get the better matches:
   ``t`` goes to ``c`` (``cos(d_c, d_c) = 1 = s_t``; assigned explicitly rather than through
   the float ``argmin``), and every other ``i`` goes to the unused, non-dead latent ``j`` with
   ``|cos(d_c, d_j) - s_i|`` smallest (ties: smallest index). "Unused" = not already a
   destination for this base; the base's own active latents are allowed destinations;
5. ``T = SAE.decode(f')`` (decoder bias included), ``f'_j = f_i``.

So ``f'`` keeps the L0 and the multiset of values of ``f`` and the cosine structure around the
top latent is carried over to the anchor. The construction draws nothing at random: ``gen`` is
unused and the same base always gives the same target. A base with no active latent gives
``T = decode(0) = b_dec`` with ``top_latent = anchor_latent = -1`` and ``anchor_cos = nan``.
If fewer than ``n_anchor_candidates`` latents qualify, all that do are candidates; if none do,
or no live unused latent is left for some ``i``, ``propose`` raises ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction, DirectionContext, Proposal
from sensdir.directions.sae_recon import as_target, l0, sae_decode, sae_encode, target_norm
from sensdir.directions.synth_baseline import SynthCodes, nearest_in_frequency


@dataclass
class StructCodes(SynthCodes):
    """``SynthCodes`` plus, per row, the top latent ``t``, the anchor ``c`` and ``cos(d_t, d_c)``."""

    top_B: Int[Tensor, " B"]
    anchor_B: Int[Tensor, " B"]
    anchor_cos_B: Float[Tensor, " B"]


@dataclass(frozen=True)
class SynthStructConfig(DirectionConfig):
    name: str = "synth_struct"
    anchor_cos: float = 0.42
    n_anchor_candidates: int = 100


@DIRECTIONS.register("synth_struct", SynthStructConfig)
class SynthStruct(Direction):
    returns = "target"
    cfg: SynthStructConfig

    def __init__(self, cfg: SynthStructConfig, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        if cfg.n_anchor_candidates < 1:
            raise ValueError(f"synth_struct: n_anchor_candidates must be >= 1, got {cfg.n_anchor_candidates}")
        self.freq_S = ctx.stats.firing_freq_S.detach().to("cpu", torch.float64)
        self.dead_S = ctx.stats.dead_S.detach().cpu()
        with torch.no_grad():
            w_SD = ctx.sae.W_dec.detach().float()
            self.dhat_SD = w_SD / w_SD.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # SAE's device

    def _cos_to(self, j: int) -> Float[Tensor, " d_sae"]:
        """``cos(d_j, d_k)`` for every latent ``k``, on the CPU in float64."""
        with torch.no_grad():
            return (self.dhat_SD @ self.dhat_SD[j]).to("cpu", torch.float64)

    def synthesize(self, f_BS: Float[Tensor, "B d_sae"], gen: torch.Generator | None = None) -> StructCodes:
        """The structured codes for each row of ``f_BS`` (deterministic; ``gen`` is unused)."""
        f_cpu_BS = f_BS.detach().cpu()
        n_b = f_cpu_BS.shape[0]
        f_new_BS = torch.zeros_like(f_cpu_BS)
        top_B = torch.full((n_b,), -1, dtype=torch.long)
        anchor_B = torch.full((n_b,), -1, dtype=torch.long)
        anchor_cos_B = torch.full((n_b,), float("nan"), dtype=torch.float64)
        moves: list[list[tuple[int, int]]] = []
        for b in range(n_b):
            f_S = f_cpu_BS[b]
            active_K = torch.nonzero(f_S).squeeze(1)  # increasing index
            if active_K.numel() == 0:
                moves.append([])
                continue
            # decreasing value, ties by increasing index (stable sort); t = argmax f is first
            order_K = active_K[torch.sort(-f_S[active_K], stable=True).indices]
            t = int(order_K[0])
            cos_tS = self._cos_to(t)

            excluded_S = self.dead_S.clone()
            excluded_S[t] = True
            cand_C = nearest_in_frequency(self.freq_S, t, excluded_S, self.cfg.n_anchor_candidates)
            if cand_C.numel() == 0:
                raise ValueError(f"synth_struct: no live latent other than {t} to serve as anchor (base row {b})")
            # argmin returns the first minimum: the candidate closest in frequency wins ties
            c = int(cand_C[torch.argmin((cos_tS[cand_C] - self.cfg.anchor_cos).abs())])
            cos_cS = self._cos_to(c)

            used_S = self.dead_S.clone()
            row_moves: list[tuple[int, int]] = []
            for i in order_K.tolist():
                if i == t:
                    j = c
                else:
                    gap_S = (cos_cS - cos_tS[i]).abs()  # |cos(d_c, d_j) - s_i|
                    gap_S[used_S] = float("inf")
                    if bool(used_S.all()):
                        raise ValueError(f"synth_struct: no live unused latent left for latent {i} (base row {b})")
                    j = int(torch.argmin(gap_S))  # first minimum: smallest index
                f_new_BS[b, j] = f_S[i]
                used_S[j] = True
                row_moves.append((i, j))
            moves.append(row_moves)
            top_B[b], anchor_B[b], anchor_cos_B[b] = t, c, cos_tS[c]
        return StructCodes(f_cpu_BS, f_new_BS, moves, top_B, anchor_B, anchor_cos_B)

    def propose(
        self,
        base_BD: Float[Tensor, "B d"],
        base_index_B: Int[Tensor, " B"],
        gen: torch.Generator,
    ) -> Proposal:
        codes = self.synthesize(sae_encode(self.ctx.sae, base_BD))
        t_BD = as_target(sae_decode(self.ctx.sae, codes.f_new_BS), base_BD, self.ctx.device)
        info = {
            "anchor_cos": codes.anchor_cos_B,
            "target_l0": l0(codes.f_new_BS),  # L0 of f' (= base_l0), not of encode(T)
            "base_l0": l0(codes.f_BS),
            "top_latent": codes.top_B,
            "anchor_latent": codes.anchor_B,
            "target_norm": target_norm(t_BD),
        }
        return Proposal(target_BD=t_BD, info=info)
