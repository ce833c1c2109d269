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

Ties (choice, so that no batch shape can flip them): firing frequencies are compared as
integer counts; decoder cosines are computed in float64 and compared in units of 1e-9
(``COS_UNITS``), so "closest" is exact on those units and equal distances go to the smaller
index (step 2: to the candidate closer in frequency).

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

from sensdir.config import bounded
from sensdir.directions.base import DIRECTIONS, Direction, NormMatchableConfig
from sensdir.directions.synth_baseline import SynthCodes
from sensdir.sae_ops import cpu_firing, l0, like_base, match_real_norm, nearest_in_frequency, sae_decode, sae_encode, target_norm
from sensdir.walk_types import DirectionContext, Proposal


@dataclass
class StructCodes(SynthCodes):
    """``SynthCodes`` plus, per row, the top latent ``t``, the anchor ``c`` and ``cos(d_t, d_c)``."""

    top_B: Int[Tensor, " B"]
    anchor_B: Int[Tensor, " B"]
    anchor_cos_B: Float[Tensor, " B"]


COS_UNITS = 1e9  # decoder cosines are compared in these units (a tolerance of 1e-9)


@dataclass(frozen=True)
class SynthStructConfig(NormMatchableConfig):
    name: str = "synth_struct"
    anchor_cos: float = bounded(0.42, ge=-1, le=1)
    n_anchor_candidates: int = bounded(100, ge=1)


@DIRECTIONS.register("synth_struct", SynthStructConfig)
class SynthStruct(Direction):
    returns = "target"
    info_columns = {
        "anchor_cos": "float64",
        "target_l0": "int64",
        "base_l0": "int64",
        "top_latent": "int64",
        "anchor_latent": "int64",
        "target_norm": "float64",
    }
    cfg: SynthStructConfig
    CHUNK = 256  # bases whose decoder cosines are computed in one matmul (CHUNK x d_sae floats)

    def __init__(self, cfg: SynthStructConfig, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        if cfg.n_anchor_candidates < 1:
            raise ValueError(f"synth_struct: n_anchor_candidates must be >= 1, got {cfg.n_anchor_candidates}")
        self.freq_S, self.dead_S = cpu_firing(ctx.stats)
        with torch.no_grad():
            w_SD = ctx.sae.W_dec.detach().double()
            self.dhat_SD = w_SD / w_SD.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # SAE's device
        self.anchor_q = round(cfg.anchor_cos * COS_UNITS)

    def _cos_rows(self, j_N: Int[Tensor, " n"]) -> Float[Tensor, "n d_sae"]:
        """``cos(d_j, d_k)`` for each ``j`` in ``j_N`` and every latent ``k``, in integer units of
        ``1 / COS_UNITS`` (float64 holding whole numbers, on the CPU). (choice) Cosines are
        matched to this tolerance and exact ties go to the smaller index: the float64 product's
        rounding, which varies with the batch shape by ~1e-16, cannot flip a match."""
        with torch.no_grad():
            rows_ND = self.dhat_SD[j_N.to(self.dhat_SD.device)]
            return torch.round((rows_ND @ self.dhat_SD.T) * COS_UNITS).cpu()

    def synthesize(self, f_BS: Float[Tensor, "B d_sae"], gen: torch.Generator | None = None) -> StructCodes:
        """The structured codes for each row of ``f_BS`` (deterministic; ``gen`` is unused)."""
        f_cpu_BS = f_BS.detach().cpu()
        n_b = f_cpu_BS.shape[0]
        f_new_BS = torch.zeros_like(f_cpu_BS)
        top_B = torch.full((n_b,), -1, dtype=torch.long)
        anchor_B = torch.full((n_b,), -1, dtype=torch.long)
        anchor_cos_B = torch.full((n_b,), float("nan"), dtype=torch.float64)
        moves: list[list[tuple[int, int]]] = [[] for _ in range(n_b)]
        for lo in range(0, n_b, self.CHUNK):
            rows = [b for b in range(lo, min(lo + self.CHUNK, n_b)) if bool((f_cpu_BS[b] != 0).any())]
            if not rows:
                continue
            # argmax returns the first maximum: the smallest index among equal top values
            t_R = f_cpu_BS[rows].argmax(dim=-1)
            cos_tRS = self._cos_rows(t_R)
            c_R = torch.empty_like(t_R)
            for r, b in enumerate(rows):
                t = int(t_R[r])
                excluded_S = self.dead_S.clone()
                excluded_S[t] = True
                cand_C = nearest_in_frequency(self.freq_S, t, excluded_S, self.cfg.n_anchor_candidates)
                if cand_C.numel() == 0:
                    raise ValueError(f"synth_struct: no live latent other than {t} to serve as anchor (base row {b})")
                # argmin returns the first minimum: the candidate closest in frequency wins ties
                c_R[r] = cand_C[torch.argmin((cos_tRS[r, cand_C] - self.anchor_q).abs())]
            cos_cRS = self._cos_rows(c_R)
            for r, b in enumerate(rows):
                t, c = int(t_R[r]), int(c_R[r])
                moves[b] = self._move(f_cpu_BS[b], f_new_BS[b], t, c, cos_tRS[r], cos_cRS[r], b)
                top_B[b], anchor_B[b], anchor_cos_B[b] = t, c, float(cos_tRS[r, c]) / COS_UNITS
        return StructCodes(f_cpu_BS, f_new_BS, moves, top_B, anchor_B, anchor_cos_B)

    def _move(
        self,
        f_S: Float[Tensor, " d_sae"],
        f_new_S: Float[Tensor, " d_sae"],
        t: int,
        c: int,
        cos_tS: Float[Tensor, " d_sae"],
        cos_cS: Float[Tensor, " d_sae"],
        b: int,
    ) -> list[tuple[int, int]]:
        """Fill ``f_new_S`` (in place) from ``f_S``; return the moves ``(i, j)`` in order."""
        active_K = torch.nonzero(f_S).squeeze(1)  # increasing index
        # decreasing value, ties by increasing index (stable sort): t = argmax f comes first
        order_K = active_K[torch.sort(-f_S[active_K], stable=True).indices]
        assert int(order_K[0]) == t
        # cos(d_c, d_j) for the latents still available; +inf marks dead or used ones
        free_cos_S = cos_cS.masked_fill(self.dead_S, float("inf"))
        row_moves: list[tuple[int, int]] = []
        for i in order_K.tolist():
            if i == t:
                j = c  # cos(d_c, d_c) = 1 = s_t: t goes to the anchor
            else:
                gap_S = (free_cos_S - cos_tS[i]).abs()  # |cos(d_c, d_j) - s_i|
                j = int(torch.argmin(gap_S))  # first minimum: smallest index
                if gap_S[j] == float("inf"):
                    raise ValueError(f"synth_struct: no live unused latent left for latent {i} (base row {b})")
            f_new_S[j] = f_S[i]
            free_cos_S[j] = float("inf")
            row_moves.append((i, j))
        return row_moves

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        codes = self.synthesize(sae_encode(self.ctx.sae, base_BD))
        t_BD = like_base(sae_decode(self.ctx.sae, codes.f_new_BS), base_BD, self.ctx.device)
        matched: dict = {}
        if self.cfg.match_norm:  # the only draw from gen: the construction itself is deterministic
            t_BD, matched = match_real_norm(t_BD, self.ctx.pool_PD, gen)
        info = {
            **matched,
            "anchor_cos": codes.anchor_cos_B,
            "target_l0": l0(codes.f_new_BS),  # L0 of f' (= base_l0), not of encode(T)
            "base_l0": l0(codes.f_BS),
            "top_latent": codes.top_B,
            "anchor_latent": codes.anchor_B,
            "target_norm": target_norm(t_BD),
        }
        return Proposal(target_BD=t_BD, info=info)
