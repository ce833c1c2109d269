"""Readouts of perturbed activations: run the model from the site's layer on.

For the last-position site every row shares the clean prefix, so a row is the clean
residual stream at the site with its last position replaced; only blocks from the site's
layer on are run, and only the perturbed position is unembedded (the vocabulary-sized
logits are the largest tensor of the whole computation).

``naive_readouts`` is the papers' computation (a hook overwrites the site, the whole
sequence runs through the whole model); tests prove the two agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.fused import kl_sums, maybe_compiled
from sensdir.metrics import kl_from_logits

_SITE_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


class SiteError(ValueError):
    pass


@dataclass(frozen=True)
class Site:
    hook: str
    layer: int
    start_layer: int  # first block that reads the (perturbed) residual stream

    @classmethod
    def parse(cls, hook: str, n_layers: int) -> "Site":
        m = _SITE_RE.match(hook)
        if m is None:
            raise SiteError(
                f"site hook {hook!r} is not a residual-stream hook; use blocks.<layer>.hook_resid_pre "
                f"or blocks.<layer>.hook_resid_post with layer in 0..{n_layers - 1}"
            )
        layer = int(m.group(1))
        if not 0 <= layer < n_layers:
            raise SiteError(f"site hook {hook!r}: layer {layer} is outside the model's layers 0..{n_layers - 1}")
        return cls(hook, layer, layer if m.group(2) == "pre" else layer + 1)


def final_hook(n_layers: int) -> str:
    return f"blocks.{n_layers - 1}.hook_resid_post"


@torch.inference_mode()
def clean_site_resid(model, tokens_BT: Int[Tensor, "B T"], site: Site) -> Float[Tensor, "B T d"]:
    """The clean residual stream at the site, every position."""
    _, cache = model.run_with_cache(tokens_BT, names_filter=site.hook, stop_at_layer=site.layer + 1)
    return cache[site.hook]


def blocks_from_site(model, resid_NTD: Float[Tensor, "N T d"], site: Site) -> Float[Tensor, "N T d"]:
    """The residual stream after the last block, running only the blocks from the site on."""
    for block in model.blocks[site.start_layer :]:
        resid_NTD = block(resid_NTD)
    return resid_NTD


@torch.inference_mode()
def run_from_site(
    model, resid_NTD: Float[Tensor, "N T d"], site: Site
) -> tuple[Float[Tensor, "N V"], Float[Tensor, "N d"]]:
    """Logits and final residual at the last position, running blocks from the site on."""
    final_ND = blocks_from_site(model, resid_NTD, site)[:, -1, :]
    return unembed(model, final_ND), final_ND


@torch.inference_mode()
def naive_readouts(
    model, tokens_T: Int[Tensor, " T"], acts_KD: Float[Tensor, "K d"], site: Site
) -> tuple[Float[Tensor, "K V"], Float[Tensor, "K d"]]:
    """Reference: overwrite the site's last position with a hook, run the full model."""
    K = acts_KD.shape[0]
    tokens_KT = tokens_T[None, :].expand(K, -1)

    def overwrite(resid_KTD, hook):
        resid_KTD = resid_KTD.clone()
        resid_KTD[:, -1, :] = acts_KD.to(resid_KTD.dtype)
        return resid_KTD

    fhook = final_hook(model.cfg.n_layers)
    store: dict[str, Tensor] = {}

    def grab(resid, hook):
        store["final"] = resid[:, -1, :]

    logits_KTV = model.run_with_hooks(tokens_KT, fwd_hooks=[(site.hook, overwrite), (fhook, grab)])
    return logits_KTV[:, -1, :], store["final"]


@dataclass
class StepMetrics:
    kl_BK: Float[Tensor, "B K"]
    l2_BK: Float[Tensor, "B K"]


def _row_chunks(B: int, K: int, budget: int) -> Iterator[slice]:
    rows = max(1, budget // K)
    for start in range(0, B, rows):
        yield slice(start, min(B, start + rows))


@dataclass
class PrefixKV:
    """Keys and values of the clean prefix (every position but the last) for each block
    from the site on. The last position's perturbation cannot reach them (causal mask), so
    they are computed once per prompt and shared by every step of its walks."""

    keys_L: list[Tensor]  # per block: [B, T-1, heads, d_head]
    values_L: list[Tensor]


@torch.inference_mode()
def prefix_kv(model, clean_BTD: Float[Tensor, "B T d"], site: Site) -> PrefixKV:
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    B = clean_BTD.shape[0]
    resid = clean_BTD[:, :-1, :]
    keys, values = [], []
    for block in model.blocks[site.start_layer :]:
        entry = TransformerLensKeyValueCacheEntry.init_cache_entry(model.cfg, clean_BTD.device, B)
        resid = block(resid, past_kv_cache_entry=entry)
        keys.append(entry.past_keys)
        values.append(entry.past_values)
    return PrefixKV(keys, values)


@torch.inference_mode()
def run_last_from_site(
    model, acts_ND: Float[Tensor, "N d"], prefix: PrefixKV, prompt_N: Int[Tensor, " N"], site: Site
) -> Float[Tensor, "N d"]:
    """Final residual of the last position when only it is recomputed, on the prefix's
    frozen keys and values (transformer_lens's own blocks and KV-cache entries)."""
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    resid = acts_ND[:, None, :]
    for i, block in enumerate(model.blocks[site.start_layer :]):
        entry = TransformerLensKeyValueCacheEntry(
            past_keys=prefix.keys_L[i][prompt_N], past_values=prefix.values_L[i][prompt_N], frozen=True
        )
        resid = block(resid, past_kv_cache_entry=entry)
    return resid[:, 0, :]


def _logit_rows(model, logits_mb: float) -> int:
    """Rows of vocabulary-sized logits (and their log-softmax copies) that fit the budget."""
    per_row = model.cfg.d_vocab * 4 * 2  # logits (and a float32 copy of low-precision ones)
    return max(1, int(logits_mb * 2**20 // per_row))


def walk_kl_(logits_wKV: Float[Tensor, "w K V"], fused: bool = False) -> Float[Tensor, "w K"]:
    """KL(P_0 || Q_k) of each step's logits against its walk's step 0; may overwrite its input.

    With p = softmax(z_0) and L_0 = logsumexp(z_0): KL = log sum_v exp(z_k,v - L_0)
    - p . (z_k - z_0) + const, the constant fixed so that step 0 is exactly 0. Shifting by
    the clean L_0 instead of each row's max saves a pass over the vocabulary; rows where that
    overflows (a logit more than ~88 nats above the clean log-partition) come back as inf or
    nan, and the caller recomputes them with ``kl_from_logits``. Eager and in place, the
    vocabulary-sized work is a subtraction, a product with p, an exp and a sum; ``fused``
    does both sums in one compiled pass (``sensdir.fused.kl_sums``).
    """
    z0_w1V = logits_wKV[:, :1, :].float()
    lse0_w11 = torch.logsumexp(z0_w1V, dim=-1, keepdim=True)
    p_w1V = (z0_w1V - lse0_w11).exp()
    if fused:
        s_wK, pz_wK = maybe_compiled(kl_sums, True)(logits_wKV, lse0_w11, p_w1V)
        log_s_wK = s_wK.log()
    else:
        x_wKV = logits_wKV if logits_wKV.dtype == torch.float32 else logits_wKV.float()
        x_wKV.sub_(lse0_w11)
        pz_wK = torch.bmm(x_wKV, p_w1V.transpose(1, 2))[..., 0]
        log_s_wK = x_wKV.exp_().sum(-1).log()
    return (log_s_wK - log_s_wK[:, :1]) - (pz_wK - pz_wK[:, :1])


def final_norm(model, resid_ND: Float[Tensor, "N d"]) -> Float[Tensor, "N d"]:
    """``ln_final`` as one fused kernel where it is a LayerNorm (transformer_lens's module
    takes several elementwise passes)."""
    kind = model.cfg.normalization_type
    if kind in ("LN", "LNPre"):
        ln = model.ln_final
        w, b = (ln.w, ln.b) if kind == "LN" else (None, None)
        return torch.nn.functional.layer_norm(resid_ND, resid_ND.shape[-1:], w, b, model.cfg.eps)
    return model.ln_final(resid_ND)


def unembed(model, resid_ND: Float[Tensor, "N d"], out: Tensor | None = None) -> Float[Tensor, "N V"]:
    """Logits of final residuals, into ``out`` if given. (transformer_lens's Unembed copies
    the transposed W_U on every call, which costs as much as the product itself for a few
    hundred rows; GPT-2's b_U is all zeros, and skipping it saves a pass over the logits.)"""
    h_ND, W_U, b_U = final_norm(model, resid_ND), model.unembed.W_U, model.unembed.b_U
    if not b_U.any():
        return torch.mm(h_ND, W_U, out=out)
    return torch.addmm(b_U, h_ND, W_U, out=out)


def _stable_walk_kl(model, logits_wKV: Tensor, final_wKD: Tensor, fused: bool = False) -> Float[Tensor, "w K"]:
    """``walk_kl_``, with walks whose cheap shift overflowed redone the standard way."""
    kl_wK = walk_kl_(logits_wKV, fused)
    bad_w = ~torch.isfinite(kl_wK).all(dim=-1)
    for i in bad_w.nonzero()[:, 0].tolist():
        logits_KV = unembed(model, final_wKD[i])
        kl_wK[i] = kl_from_logits(logits_KV[:1].expand_as(logits_KV), logits_KV)
    return kl_wK


@torch.inference_mode()
def _kl_l2_of_walks(
    model, final_nKD: Float[Tensor, "n K d"], logit_rows: int, workspace=None, fused: bool = False
) -> tuple[Tensor, Tensor]:
    """KL and L2 of each step against its walk's step 0, unembedding a few walks at a time
    so that the vocabulary-sized tensors stay within budget (in the workspace's logits
    buffer, when one is given). Chunks are of equal size: a small last chunk would stream the
    whole unembedding matrix for a few rows."""
    n, K, D = final_nKD.shape
    kl_nK = torch.empty(n, K, dtype=torch.float32, device=final_nKD.device)
    n_chunks = max(1, math.ceil(n / max(1, logit_rows // K)))
    walks = math.ceil(n / n_chunks)
    for w in range(0, n, walks):
        f_wKD = final_nKD[w : w + walks]
        rows = f_wKD.shape[0] * K
        out = None if workspace is None else workspace.get("logits", rows, model.cfg.d_vocab, f_wKD)
        logits_wKV = unembed(model, f_wKD.reshape(rows, D), out=out).view(f_wKD.shape[0], K, -1)
        kl_nK[w : w + walks] = _stable_walk_kl(model, logits_wKV, f_wKD, fused)
    l2_nK = (final_nKD.float() - final_nKD[:, :1, :].float()).norm(dim=-1)
    return kl_nK, l2_nK


class WalkEngine:
    """Computes the KL and L2 curves of walks that perturb the last position.

    ``path`` picks how: ``lean`` (the clean prefix's keys and values computed once per
    prompt and shared by every step of its walks, in ``sensdir.fastpath``), ``kv_cache``
    (the same through transformer_lens's blocks and KV-cache entries, for layouts the lean
    path doesn't cover) or ``full`` (every step reruns the whole sequence from the site).
    ``auto`` takes the first that applies. All three agree with ``naive_readouts``.
    ``compile`` fuses the vocabulary-sized KL work into one compiled pass (``sensdir.fused``).
    """

    PATHS = ("auto", "lean", "kv_cache", "full")

    def __init__(
        self, model, site: Site, path: str = "auto", batch_size: int = 4096, logits_mb: float = 512, compile: bool = False
    ):
        from sensdir.fastpath import LastPosition, unsupported_reason

        if path not in self.PATHS:
            raise ValueError(f"engine path {path!r} is unknown; valid choices: {', '.join(self.PATHS)}")
        if path == "auto":
            path = "lean" if unsupported_reason(model.cfg) is None else "kv_cache"
        self.model, self.site, self.path = model, site, path
        self.batch_size, self.logit_rows, self.compile = batch_size, _logit_rows(model, logits_mb), compile
        self.lean = LastPosition(model, site.start_layer) if path == "lean" else None

    @torch.inference_mode()
    def walk_metrics(
        self, clean_BTD: Float[Tensor, "B T d"], acts_BKD: Float[Tensor, "B K d"], progress=None
    ) -> StepMetrics:
        """KL and L2 at every step of every walk, relative to that walk's step 0.

        Whole walks go into one forward pass (``batch_size`` bounds rows x steps), so step 0's
        readout comes from the same batch as the others and KL and L2 start at exactly 0.
        """
        B, K, D = acts_BKD.shape
        T = clean_BTD.shape[1]
        kl_BK = torch.empty(B, K, dtype=torch.float32, device=acts_BKD.device)
        l2_BK = torch.empty(B, K, dtype=torch.float32, device=acts_BKD.device)
        if self.path == "lean":
            prefix = self.lean.prefix(clean_BTD)
        elif self.path == "kv_cache":
            prefix = prefix_kv(self.model, clean_BTD, self.site)
        ws = self.lean.workspace if self.lean is not None else None
        for rows in _row_chunks(B, K, self.batch_size):
            n = rows.stop - rows.start
            acts_nKD = acts_BKD[rows].to(clean_BTD.dtype)
            if self.path == "lean":
                final_nKD = self.lean.run(acts_nKD, [(k[rows], v[rows]) for k, v in prefix])
            elif self.path == "kv_cache":
                prompt_N = torch.arange(rows.start, rows.stop, device=acts_nKD.device).repeat_interleave(K)
                final_nKD = run_last_from_site(self.model, acts_nKD.reshape(n * K, D), prefix, prompt_N, self.site).reshape(n, K, D)
            else:
                resid_NTD = clean_BTD[rows, None, :, :].expand(n, K, T, D).reshape(n * K, T, D).clone()
                resid_NTD[:, -1, :] = acts_nKD.reshape(n * K, D)
                final_nKD = blocks_from_site(self.model, resid_NTD, self.site)[:, -1, :].reshape(n, K, D)
            kl_BK[rows], l2_BK[rows] = _kl_l2_of_walks(self.model, final_nKD, self.logit_rows, ws, self.compile)
            if progress is not None:
                progress.update(n)
        return StepMetrics(kl_BK, l2_BK)


@torch.inference_mode()
def walk_metrics_all_positions(
    model,
    acts_BTKD: Float[Tensor, "B T K d"],
    site: Site,
    batch_size: int = 4096,
    logits_mb: float = 512,
    progress=None,
) -> StepMetrics:
    """Site mode ``all`` [LH24]: every position perturbed, each along its own walk.

    The whole sequence is rerun from the site for every step. KL and L2 at each position are
    taken against step 0 and averaged over the positions but the last (METHODS §4, as
    [G24]; (choice) L2 is averaged over the same positions as KL).
    """
    B, T, K, D = acts_BTKD.shape
    if T < 2:
        raise ValueError("site.positions=all needs prompts of at least 2 tokens (the last position is excluded)")
    kl_BK = torch.empty(B, K, dtype=torch.float32, device=acts_BTKD.device)
    l2_BK = torch.empty(B, K, dtype=torch.float32, device=acts_BTKD.device)
    walks = max(1, _logit_rows(model, logits_mb) // (K * (T - 1)))
    for rows in _row_chunks(B, K * T, batch_size):
        n = rows.stop - rows.start
        resid_nKTD = acts_BTKD[rows].permute(0, 2, 1, 3).reshape(n * K, T, D).contiguous()
        resid_nKTD = blocks_from_site(model, resid_nKTD, site)
        final_nKPD = resid_nKTD[:, :-1, :].reshape(n, K, T - 1, D)
        l2_BK[rows] = (final_nKPD.float() - final_nKPD[:, :1].float()).norm(dim=-1).mean(-1)
        kl = torch.empty(n, K, T - 1, dtype=torch.float32, device=acts_BTKD.device)
        for w in range(0, n, walks):
            f = final_nKPD[w : w + walks]  # [w, K, P, d]: one walk per (prompt, position)
            logits = unembed(model, f.reshape(-1, D)).reshape(*f.shape[:3], -1)
            logits_wPKV = logits.permute(0, 2, 1, 3).reshape(-1, K, logits.shape[-1])
            kl[w : w + walks] = _stable_walk_kl(model, logits_wPKV, f.permute(0, 2, 1, 3).reshape(-1, K, D)).reshape(
                f.shape[0], T - 1, K
            ).transpose(1, 2)
        kl_BK[rows] = kl.mean(-1)
        if progress is not None:
            progress.update(n)
    return StepMetrics(kl_BK, l2_BK)


def walk_metrics(
    model,
    clean_BTD: Float[Tensor, "B T d"],
    acts_BKD: Float[Tensor, "B K d"],
    site: Site,
    batch_size: int = 4096,
    progress=None,
    path: str = "auto",
    logits_mb: float = 512,
    compile: bool = False,
) -> StepMetrics:
    """One-off ``WalkEngine(...).walk_metrics(...)``."""
    return WalkEngine(model, site, path, batch_size, logits_mb, compile).walk_metrics(clean_BTD, acts_BKD, progress)
