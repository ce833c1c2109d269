"""Elementwise-and-reduce kernels that ``torch.compile`` fuses into one pass over memory.

Only the vocabulary-sized work is compiled: after the unembedding, eager PyTorch needs four
passes over the [rows, vocab] logits for the KL (shift, exponentiate, sum, product with the
clean distribution); the compiled kernel reads them once. The matrix products stay eager.
Compiling takes a few seconds on first use (cached on disk by inductor afterwards); where it
fails (no C++ compiler on a CPU node, no Triton on a GPU node) the eager function runs
instead, after one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

_COMPILED: dict[Callable, Callable | None] = {}


def maybe_compiled(fn: Callable, enabled: bool) -> Callable:
    """``fn`` compiled (dynamic shapes) when ``enabled``; ``fn`` itself otherwise or after
    compiling has failed once in this process."""
    if not enabled:
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    compiled = _COMPILED[fn]
    if compiled is None:
        return fn

    def call(*args):
        try:
            return compiled(*args)
        except Exception as e:  # noqa: BLE001  any backend failure: the eager kernel is exact too
            warnings.warn(
                f"sensdir: torch.compile of {fn.__name__} failed ({type(e).__name__}); running it eagerly", stacklevel=2
            )
            _COMPILED[fn] = None
            return fn(*args)

    return call


def kl_sums(
    logits_wKV: Float[Tensor, "w K V"], lse0_w11: Float[Tensor, "w 1 1"], p_w1V: Float[Tensor, "w 1 V"]
) -> tuple[Float[Tensor, "w K"], Float[Tensor, "w K"]]:
    """Per step: sum_v exp(z_v - L_0) and sum_v p_v z_v, the two vocabulary sums of the KL."""
    z = logits_wKV.float()
    return (z - lse0_w11).exp().sum(-1), (z * p_w1V).sum(-1)
