"""The embedded default language model of sensdir (no download, no GPU needed).

A 4-layer, d_model-256 causal transformer with its own byte-level BPE tokenizer, trained by
``python -m sensdir.embedded.train`` on English prose from the local Python standard library's
documentation (:mod:`sensdir.embedded.corpus`) mixed with IOI and first-letter sentences
(:mod:`sensdir.embedded.tasks`).  The weights, config, tokenizer, metrics and model card live in
``sensdir/embedded/assets/model/``; see ``MODEL_CARD.md`` there.

This module imports nothing heavy at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
MODEL_DIR = ASSETS_DIR / "model"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer")


def _missing_error(path: Path, missing: list[str]) -> Exception:
    msg = (
        f"embedded model directory {str(path)!r} lacks {', '.join(missing)}; reinstall sensdir or "
        f"retrain it with `python -m sensdir.embedded.train --out {path}`"
    )
    try:
        from sensdir.errors import MissingResourceError
    except ImportError:  # pragma: no cover
        return FileNotFoundError(msg)
    return MissingResourceError(msg)


def model_dir(path: str | Path | None = None) -> Path:
    """The weights directory (``path`` or the shipped one); raises a clear error naming the
    missing files if it is incomplete."""
    p = Path(path) if path is not None else MODEL_DIR
    missing = [n for n in REQUIRED_FILES if not (p / n).exists()]
    if missing:
        raise _missing_error(p, missing)
    return p


def model_config(path: str | Path | None = None) -> dict[str, Any]:
    """The HookedTransformerConfig keyword arguments of the model."""
    import json

    return json.loads((model_dir(path) / "config.json").read_text())


def load_tokenizer(path: str | Path | None = None):
    """The model's tokenizer as a ``transformers`` fast tokenizer (loaded through
    ``AutoTokenizer``, which is what ``HookedTransformer`` accepts).  Its BOS = EOS = PAD token
    is ``<|endoftext|>`` (id 0), the document separator used in training."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir(path) / "tokenizer"))


def load_raw_tokenizer(path: str | Path | None = None):
    """The same tokenizer as a bare ``tokenizers.Tokenizer``."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir(path) / "tokenizer" / "tokenizer.json"))


def load_embedded_model(device: str | torch.device = "cpu", dtype: torch.dtype | None = None, path: str | Path | None = None):
    """The embedded model as a ``transformer_lens.HookedTransformer`` in eval mode.

    ``dtype`` defaults to float32 (the weights are stored in float16).  ``path``: another weights
    directory with the same layout (``config.json``, ``model.safetensors``, ``tokenizer/``).
    Prompts are tokenized with a prepended BOS (``<|endoftext|>``) by default, as in training.
    """
    import torch

    from sensdir.loading import load_model_dir

    return load_model_dir(model_dir(path), device, torch.float32 if dtype is None else dtype)


__all__ = ["ASSETS_DIR", "MODEL_DIR", "load_embedded_model", "load_tokenizer", "load_raw_tokenizer", "model_config", "model_dir"]
