"""The lean path: a forward pass of the last position only, for the common HookedTransformer layouts.

Every step of a walk perturbs only the last position, so each block needs that position's
query against keys and values of a prefix that all steps of the walk share. Run through
transformer_lens's blocks, each row of the batch would carry its own copy of the prefix
keys and values, and every activation function would take several elementwise passes.
Here the prefix keys and values stay one copy per walk (the K steps of a walk are the
batch of one matrix product against them), the query/key/value projections are one matrix
product, and layer norms and GELUs are single fused kernels.

It reads the model's own weights (no copy beyond the fused QKV matrix), so it stays in step
with the model; ``supported`` says when the layout is one it handles (GPT-2 style: learned
absolute positions, LN / LNPre / RMS, plain MLP with GELU/ReLU/SiLU, full-head attention),
and the engine uses transformer_lens's blocks otherwise. Tests check it against them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from sensdir.engine.forward import norm

# in place: every caller applies them to a fresh matrix product
_ACTS: dict[str, Callable[[Tensor], Any]] = {
    "gelu_new": lambda x: torch.ops.aten.gelu_(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: torch.ops.aten.gelu_(x, approximate="tanh"),
    "gelu": torch.ops.aten.gelu_,
    "relu": torch.relu_,
    "silu": lambda x: F.silu(x, inplace=True),
}
_NORMS = ("LN", "LNPre", "RMS", "RMSPre", None)


class Workspace:
    """Named buffers reused from batch to batch.

    On the CPU a fresh tensor above glibc's mmap threshold (32 MB at most) comes back as new
    pages, and faulting them in costs about a fifth of the matrix product that fills them
    (measured: [4000, 768] x [768, 3072] at 270 GFLOP/s into a new tensor, 330 into a reused
    one). The lean path writes its large intermediates into these instead.
    """

    def __init__(self):
        self._bufs: dict[str, Tensor] = {}

    def get(self, name: str, rows: int, cols: int, like: Tensor) -> Tensor:
        buf = self._bufs.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._bufs[name] = torch.empty(rows, cols, dtype=like.dtype, device=like.device)
        return buf[:rows]


def unsupported_reason(cfg) -> str | None:
    """Why the lean path can't run this model, or None if it can."""
    checks = {
        "positional embeddings other than standard": cfg.positional_embedding_type != "standard",
        f"normalization {cfg.normalization_type}": cfg.normalization_type not in _NORMS,
        f"activation {cfg.act_fn}": cfg.act_fn not in _ACTS,
        "gated MLP": bool(getattr(cfg, "gated_mlp", False)),
        "grouped-query attention": getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads),
        "attention-only model": cfg.attn_only,
        "parallel attention and MLP": bool(getattr(cfg, "parallel_attn_mlp", False)),
        "attention soft cap": bool(getattr(cfg, "attn_scores_soft_cap", -1) and cfg.attn_scores_soft_cap > 0),
        "split QKV inputs": bool(cfg.use_attn_in or cfg.use_split_qkv_input),
        "several devices": cfg.n_devices != 1,
        "local attention": any(t != "global" for t in (getattr(cfg, "attn_types", None) or ["global"])),
        "post-attention norms": bool(getattr(cfg, "use_normalization_before_and_after", False)),
        "QK norm": bool(getattr(cfg, "use_qk_norm", False)),
    }
    reasons = [k for k, bad in checks.items() if bad]
    return ", ".join(reasons) if reasons else None


@dataclass
class _Layer:
    block: Any  # a transformer_lens TransformerBlock
    W_qkv: Tensor  # [d, 3 * heads * d_head]
    b_qkv: Tensor
    W_O: Tensor  # [heads * d_head, d]


class LeanPath:
    """The lean path: blocks ``start_layer..`` of ``model`` for one perturbed last position per row."""

    def __init__(self, model, start_layer: int):
        reason = unsupported_reason(model.cfg)
        if reason is not None:
            raise ValueError(f"the lean path does not support: {reason}")
        self.model = model
        self.cfg = model.cfg
        self.workspace = Workspace()
        self.layers = []
        for block in model.blocks[start_layer:]:
            a = block.attn
            H, dh = a.W_Q.shape[0], a.W_Q.shape[2]
            # queries come out pre-divided by the attention scale (saves a pass over the scores)
            s = 1.0 / float(a.attn_scale)
            W_qkv = torch.cat([w.permute(1, 0, 2).reshape(-1, H * dh) for w in (a.W_Q * s, a.W_K, a.W_V)], dim=1)
            b_qkv = torch.cat([b.reshape(H * dh) for b in (a.b_Q * s, a.b_K, a.b_V)])
            self.layers.append(_Layer(block, W_qkv.contiguous(), b_qkv, a.W_O.reshape(H * dh, -1)))

    def _qkv(self, layer: _Layer, x_ND: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries (pre-scaled), keys and values, each [N, heads, d_head], views of one
        product (written into ``out`` if given)."""
        h_ND = norm(self.cfg.normalization_type, getattr(layer.block, "ln1", None), x_ND, self.cfg.eps)
        qkv = torch.addmm(layer.b_qkv, h_ND, layer.W_qkv, out=out)
        H = self.cfg.n_heads
        q, k, v = qkv.view(x_ND.shape[0], 3, H, layer.W_qkv.shape[1] // (3 * H)).unbind(1)
        return q, k, v

    def _add_attn_(self, layer: _Layer, x_ND: Tensor, z_NHd: Tensor) -> None:
        """x += attention output, accumulated inside the product."""
        x_ND.addmm_(z_NHd.reshape(x_ND.shape[0], layer.W_O.shape[0]), layer.W_O).add_(layer.block.attn.b_O)

    def _add_mlp_(self, layer: _Layer, x_ND: Tensor, out: Tensor | None = None) -> None:
        """x += MLP(x), the hidden layer written into ``out`` if given."""
        blk, mlp = layer.block, layer.block.mlp
        h_ND = norm(self.cfg.normalization_type, getattr(blk, "ln2", None), x_ND, self.cfg.eps)
        hid = torch.addmm(mlp.b_in, h_ND, mlp.W_in, out=out)
        _ACTS[self.cfg.act_fn](hid)
        x_ND.addmm_(hid, mlp.W_out).add_(mlp.b_out)

    @torch.inference_mode()
    def prefix(self, clean_BTD: Float[Tensor, "B T d"]) -> list[tuple[Tensor, Tensor]]:
        """Keys and values [B, heads, T-1, d_head] of the clean prefix, per layer. (Not in the
        workspace: they are kept for the walks.)"""
        B, T, D = clean_BTD.shape
        P = T - 1
        x_ND = clean_BTD[:, :-1, :].reshape(B * P, D).clone()
        out = []
        for i, layer in enumerate(self.layers):
            q, k, v = (t.view(B, P, *t.shape[1:]).transpose(1, 2) for t in self._qkv(layer, x_ND))  # [B, H, P, dh]
            out.append((k, v))
            if i == len(self.layers) - 1:
                break  # nothing reads the prefix's output of the last block
            if P:
                mask = torch.ones(P, P, dtype=torch.bool, device=x_ND.device).tril()
                z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
            else:
                z = q
            self._add_attn_(layer, x_ND, z.transpose(1, 2))
            self._add_mlp_(layer, x_ND)
        return out

    @torch.inference_mode()
    def run(self, acts_wKD: Float[Tensor, "w K d"], prefix_kv: list[tuple[Tensor, Tensor]]) -> Float[Tensor, "w K d"]:
        """Final residual of each step; ``prefix_kv[i]`` holds layer i's prefix for these w walks.

        The residual stream is one [w*K, d] tensor updated in place: each block's output
        projections accumulate into it inside the matrix product (``addmm_``), and the wide
        intermediates (QKV, MLP hidden) live in the workspace."""
        w, K, D = acts_wKD.shape
        N = w * K
        x_ND = acts_wKD.reshape(N, D).clone()
        ws = self.workspace
        for layer, (kp, vp) in zip(self.layers, prefix_kv):
            qkv_buf = ws.get("qkv", N, layer.W_qkv.shape[1], x_ND)
            q, k, v = (t.view(w, K, *t.shape[1:]) for t in self._qkv(layer, x_ND, qkv_buf))  # [w, K, H, dh]
            qh = q.transpose(1, 2)  # [w, H, K, dh]
            s_pre = torch.matmul(qh, kp.transpose(-1, -2))  # [w, H, K, P]: the prefix is shared by the K steps
            s_self = (q * k).sum(-1).transpose(1, 2).unsqueeze(-1)  # [w, H, K, 1]
            probs = torch.softmax(torch.cat([s_pre, s_self], dim=-1), dim=-1)
            z = torch.matmul(probs[..., :-1], vp).addcmul_(probs[..., -1:], v.transpose(1, 2))  # [w, H, K, dh]
            self._add_attn_(layer, x_ND, z.transpose(1, 2))
            self._add_mlp_(layer, x_ND, ws.get("mlp", N, layer.block.mlp.W_in.shape[1], x_ND))
        return x_ND.view(w, K, D)
