"""The one place sensdir constructs transformer_lens models.

sensdir drives ``transformer_lens.HookedTransformer`` (hook names, ``run_with_hooks``, the KV
cache entry, the state-dict names of ``HookedTransformerConfig``). transformer_lens 3.9 marks
it deprecated and 4.0 removes it in favour of ``TransformerBridge``, so the package pins
``transformer-lens<4``. Every model is built through the three functions below: a
``TransformerBridge`` path is added here (and in ``sensdir/engine/``, which reads the model's
blocks) without touching the loaders, the jobs or the tests.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

BACKEND = "transformer_lens.HookedTransformer"


def _classes() -> tuple[Any, Any]:
    with warnings.catch_warnings():  # 3.9's deprecation notice of HookedTransformer: the pin above
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    return HookedTransformer, HookedTransformerConfig


def model_config(**kwargs: Any) -> Any:
    """A ``HookedTransformerConfig`` of ``kwargs``."""
    return _classes()[1](**kwargs)


def build_model(cfg: Any, tokenizer: Any = None, move_to_device: bool = False) -> Any:
    """A model with fresh weights of config ``cfg`` (from ``model_config``)."""
    return _classes()[0](cfg, tokenizer=tokenizer, move_to_device=move_to_device)


def from_pretrained(name: str, device: torch.device | str, dtype: torch.dtype) -> Any:
    """A pretrained model by transformer_lens's name (the Hugging Face hub or its cache)."""
    return _classes()[0].from_pretrained(name, device=str(device), dtype=dtype)


def place(model: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """``model`` in ``dtype`` on ``device``, in eval mode. (HookedTransformer.to prints a line
    each time: the no-op moves are skipped.)"""
    if dtype != torch.float32:
        model.to(dtype)
    if torch.device(device).type != "cpu":
        model.to(device)
    model.cfg.device = str(device)
    model.eval()
    return model
