"""A lean pure-PyTorch GPT whose parameters carry HookedTransformer's state-dict names.

Used to train the embedded model on machines that have no ``transformer_lens`` (this module
imports nothing beyond ``torch``).  With the same weights, :class:`GPT` computes the same function
as ``transformer_lens.HookedTransformer`` built from :meth:`GPTConfig.hooked_kwargs`
(pre-LayerNorm blocks, learned absolute positions, ``gelu_new`` MLP, untied unembedding with bias,
attention scores scaled by ``1/sqrt(d_head)``, LayerNorm eps 1e-5); ``tests/test_embedded_model.py``
checks this.  Dropout (``GPTConfig.dropout``) acts only in training mode and has no parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 8
    d_head: int = 32
    d_mlp: int = 1024
    d_vocab: int = 4096
    n_ctx: int = 128
    act_fn: str = "gelu_new"
    normalization_type: str = "LN"
    positional_embedding_type: str = "standard"
    eps: float = 1e-5
    dropout: float = 0.0

    def hooked_kwargs(self) -> dict:
        """Keyword arguments for ``transformer_lens.HookedTransformerConfig``."""
        d = asdict(self)
        d.pop("dropout")
        d["d_vocab_out"] = self.d_vocab
        d["original_architecture"] = "sensdir-embedded-gpt"
        d["model_name"] = "sensdir-embedded"
        d["tokenizer_prepends_bos"] = False
        d["default_prepend_bos"] = True
        return d


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class LayerNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.empty(h, d, dh))
        self.W_K = nn.Parameter(torch.empty(h, d, dh))
        self.W_V = nn.Parameter(torch.empty(h, d, dh))
        self.W_O = nn.Parameter(torch.empty(h, dh, d))
        self.b_Q = nn.Parameter(torch.zeros(h, dh))
        self.b_K = nn.Parameter(torch.zeros(h, dh))
        self.b_V = nn.Parameter(torch.zeros(h, dh))
        self.b_O = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        # x: [batch, pos, d_model]
        B, T, _ = x.shape
        dh = self.cfg.d_head
        q = torch.einsum("btd,hde->bhte", x, self.W_Q) + self.b_Q[None, :, None, :]
        k = torch.einsum("btd,hde->bhte", x, self.W_K) + self.b_K[None, :, None, :]
        v = torch.einsum("btd,hde->bhte", x, self.W_V) + self.b_V[None, :, None, :]
        # Explicit softmax attention (deterministic on CUDA, unlike some fused kernels).
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.float().masked_fill(causal, float("-inf"))
        pattern = scores.softmax(dim=-1).to(v.dtype)
        if dropout > 0:
            pattern = F.dropout(pattern, p=dropout, training=True)
        z = pattern @ v  # [b, h, t, dh]
        return torch.einsum("bhte,hed->btd", z, self.W_O) + self.b_O


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _gelu_new(x @ self.W_in + self.b_in) @ self.W_out + self.b_out


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model, cfg.eps)
        self.attn = Attention(cfg)
        self.ln2 = LayerNorm(cfg.d_model, cfg.eps)
        self.mlp = MLP(cfg)
        self.p = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p if self.training else 0.0
        a = self.attn(self.ln1(x), dropout=p)
        x = x + (F.dropout(a, p=p, training=True) if p > 0 else a)
        m = self.mlp(self.ln2(x))
        return x + (F.dropout(m, p=p, training=True) if p > 0 else m)


class Embed(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))


class PosEmbed(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))


class Unembed(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model, cfg.eps)
        self.unembed = Unembed(cfg)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None, std: float = 0.02) -> None:
        """GPT-2 style: N(0, std) matrices, output projections scaled by 1/sqrt(2 n_layers)."""
        out_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(("W_O", "W_out")):
                p.normal_(0.0, out_std, generator=generator)
            elif name.split(".")[-1].startswith("W_"):
                p.normal_(0.0, std, generator=generator)
            elif name.endswith(".w"):
                p.fill_(1.0)
            else:
                p.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [batch, pos] -> logits [batch, pos, d_vocab]."""
        T = tokens.shape[-1]
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds n_ctx={self.cfg.n_ctx}")
        x = self.embed.W_E[tokens] + self.pos_embed.W_pos[:T]
        if self.training and self.cfg.dropout > 0:
            x = F.dropout(x, p=self.cfg.dropout, training=True)
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(x)
        return x @ self.unembed.W_U + self.unembed.b_U

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
