"""``kl``: KL(P_clean ‖ Q_k) of the next-token distribution at the perturbed position (METHODS §4).

The vocabulary-sized logits are the largest tensors of the whole computation, so the curve is
read a few walks at a time within the engine's logits budget, with one pass over the
vocabulary per step (``walk_kl_``) and the standard formula (``kl_from_logits``) as reference
and fallback.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from sensdir.config import MetricConfig
from sensdir.engine.forward import unembed
from sensdir.metrics.base import METRICS, Metric, Readout
from sensdir.metrics.kl_compiled import kl_sums, maybe_compiled
from sensdir.metrics.summaries import max_slope


def kl_from_logits(clean_logits_NV: Float[Tensor, "N V"], logits_NV: Float[Tensor, "N V"]) -> Float[Tensor, " N"]:
    """KL(P_clean || Q) = sum_v P_clean(v) (log P_clean(v) - log Q(v)), in float32.

    METHODS §4: this argument order, not the swapped one of a reference helper.
    """
    logp_NV = torch.log_softmax(clean_logits_NV.float(), dim=-1)
    logq_NV = torch.log_softmax(logits_NV.float(), dim=-1)
    return (logp_NV.exp() * (logp_NV - logq_NV)).sum(dim=-1)


def walk_kl_(logits_wKV: Float[Tensor, "w K V"], compiled: bool = False) -> Float[Tensor, "w K"]:
    """KL(P_0 || Q_k) of each step's logits against its walk's step 0; may overwrite its input.

    With p = softmax(z_0) and L_0 = logsumexp(z_0): KL = log sum_v exp(z_k,v - L_0)
    - p . (z_k - z_0) + const, the constant fixed so that step 0 is exactly 0. Shifting by
    the clean L_0 instead of each row's max saves a pass over the vocabulary; rows where that
    overflows (a logit more than ~88 nats above the clean log-partition) come back as inf or
    nan, and the caller recomputes them with ``kl_from_logits``. Eager and in place, the
    vocabulary-sized work is a subtraction, a product with p, an exp and a sum; ``compiled``
    does both sums in one compiled pass (``sensdir.metrics.kl_compiled``).
    """
    z0_w1V = logits_wKV[:, :1, :].float()
    lse0_w11 = torch.logsumexp(z0_w1V, dim=-1, keepdim=True)
    p_w1V = (z0_w1V - lse0_w11).exp()
    if compiled:
        s_wK, pz_wK = maybe_compiled(kl_sums, True)(logits_wKV, lse0_w11, p_w1V)
        log_s_wK = s_wK.log()
    else:
        x_wKV = logits_wKV if logits_wKV.dtype == torch.float32 else logits_wKV.float()
        x_wKV.sub_(lse0_w11)
        pz_wK = torch.bmm(x_wKV, p_w1V.transpose(1, 2))[..., 0]
        log_s_wK = x_wKV.exp_().sum(-1).log()
    return (log_s_wK - log_s_wK[:, :1]) - (pz_wK - pz_wK[:, :1])


def stable_walk_kl(model, logits_wKV: Tensor, final_wKD: Tensor, compiled: bool = False) -> Float[Tensor, "w K"]:
    """``walk_kl_``, with walks whose cheap shift overflowed redone the standard way."""
    kl_wK = walk_kl_(logits_wKV, compiled)
    bad_w = ~torch.isfinite(kl_wK).all(dim=-1)
    for i in bad_w.nonzero()[:, 0].tolist():
        logits_KV = unembed(model, final_wKD[i])
        kl_wK[i] = kl_from_logits(logits_KV[:1].expand_as(logits_KV), logits_KV)
    return kl_wK


@METRICS.register("kl", MetricConfig)
class KL(Metric):
    name = "kl"
    label = "KL"
    unit = "nats"
    summaries = (max_slope("kl", "KL"),)

    @torch.inference_mode()
    def curve(self, final_wKD: Float[Tensor, "w K d"], readout: Readout) -> Float[Tensor, "w K"]:
        # Chunks of equal size: a small last chunk would stream the whole unembedding matrix
        # for a few rows.
        model = readout.model
        n, K, D = final_wKD.shape
        kl_nK = torch.empty(n, K, dtype=torch.float32, device=final_wKD.device)
        n_chunks = max(1, math.ceil(n / max(1, readout.logit_rows // K)))
        walks = math.ceil(n / n_chunks)
        for w in range(0, n, walks):
            f_wKD = final_wKD[w : w + walks]
            rows = f_wKD.shape[0] * K
            out = None if readout.workspace is None else readout.workspace.get("logits", rows, model.cfg.d_vocab, f_wKD)
            logits_wKV = unembed(model, f_wKD.reshape(rows, D), out=out).view(f_wKD.shape[0], K, -1)
            kl_nK[w : w + walks] = stable_walk_kl(model, logits_wKV, f_wKD, readout.compile)
        return kl_nK
