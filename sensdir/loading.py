"""Load the model and the SAE named by the config, checking they fit the site.

Also the one way into the embedded package (``sensdir/embedded``) from the rest of sensdir: its
model and SAE assets here, and its prose corpus for the data loader (:func:`embedded_documents`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch

from sensdir.config import ModelConfig, ModelSource, SaeConfig, SaeSource
from sensdir.errors import ConfigError, CorruptResourceError, MissingResourceError, SensdirError
from sensdir.site import Site, SiteError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"run.device={name!r} is not a torch device (use auto, cpu, cuda, cuda:0, ...)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name!r} but CUDA is not available here (use run.device=auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"run.device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[str(name)]
    except KeyError:
        raise ConfigError(f"model.dtype={name!r} is not one of {', '.join(_DTYPES)}") from None


@contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """A file that is there but cannot be read as ``what`` (truncated, damaged, wrong format)
    is a ``CorruptResourceError`` naming it, not a traceback from deep inside the reader."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, TypeError, KeyError, SafetensorError, RuntimeError) as e:
        if isinstance(e, SensdirError):
            raise
        why = " ".join(str(e).split())[:300] or type(e).__name__
        raise CorruptResourceError(f"{path}: cannot be read as {what} ({type(e).__name__}: {why})") from e


def embedded_documents(split: Literal["train", "heldout"]) -> list[str]:
    """The documents of the embedded model's prose corpus split ``split`` (``train`` or ``heldout``)."""
    from sensdir.embedded.corpus import documents

    return documents(split)


def load_model(cfg: ModelConfig, device: torch.device):
    dtype = resolve_dtype(cfg.dtype)
    if cfg.source == "embedded":
        return load_model_dir(Path(cfg.path) if cfg.path else embedded_model_dir(), device, dtype)
    if cfg.source == "transformer_lens":
        from sensdir.hub import hub_call, model_hint
        from sensdir.model_backend import from_pretrained

        return hub_call(model_hint(cfg.name), lambda: from_pretrained(cfg.name, device, dtype))
    if cfg.source == "toy_error_correction":  # METHODS §11: built by construction, the embedded tokenizer
        from transformers import AutoTokenizer

        from sensdir.toy_model import toy_model

        return toy_model(AutoTokenizer.from_pretrained(str(embedded_model_dir() / "tokenizer")), device=device, dtype=dtype)
    raise ConfigError(f"model.source={cfg.source!r} is unknown; valid choices: {', '.join(ModelSource.values())}")


def embedded_model_dir() -> Path:
    return Path(__file__).resolve().parent / "embedded" / "assets" / "model"


def load_model_dir(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """A HookedTransformer saved as ``config.json`` (HookedTransformerConfig kwargs),
    ``model.safetensors`` (its state dict) and ``tokenizer/`` (``save_pretrained``)."""
    import json

    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from sensdir.model_backend import build_model, model_config, place

    missing = [n for n in ("config.json", "model.safetensors", "tokenizer") if not (path / n).exists()]
    if missing:
        raise MissingResourceError(
            f"model weights directory {str(path)!r} lacks {', '.join(missing)}; point model.path at a directory "
            f"with config.json, model.safetensors and tokenizer/ (python -m sensdir.embedded.train writes one)"
        )
    with _reading(path / "config.json", "a JSON object of HookedTransformerConfig arguments"):
        cfg = model_config(**json.loads((path / "config.json").read_text()))
    with _reading(path / "tokenizer", "a tokenizer saved by save_pretrained"):
        # transformer_lens only accepts a tokenizer reloaded through AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    model = build_model(cfg, tokenizer=tokenizer)
    with _reading(path / "model.safetensors", "a safetensors file"):
        state = load_file(str(path / "model.safetensors"))
    bad = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    # the attention masks are buffers rebuilt from n_ctx, not weights
    missing_w = [k for k in bad.missing_keys if not k.endswith(("attn.mask", "attn.IGNORE"))]
    if missing_w or bad.unexpected_keys:
        raise MissingResourceError(
            f"{path}/model.safetensors does not match config.json: missing {missing_w}, unexpected {bad.unexpected_keys}"
        )
    return place(model, device, dtype)


def embedded_sae_root() -> Path:
    return Path(__file__).resolve().parent / "embedded" / "assets" / "saes"


def embedded_sae_ids() -> list[str]:
    root = embedded_sae_root()
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("*/*/cfg.json"))


def load_sae(cfg: SaeConfig, device: torch.device):
    from sae_lens import SAE

    if cfg.source == "none":
        return None
    if cfg.source == "embedded":
        path = embedded_sae_root() / cfg.sae_id
        if not (path / "cfg.json").is_file():
            raise ConfigError(
                f"sae.sae_id={cfg.sae_id!r} is not an embedded SAE; valid choices: {', '.join(embedded_sae_ids()) or '(none shipped)'}"
            )
        with _reading(path, "an SAE saved by sae_lens (cfg.json and its weights)"):
            return SAE.load_from_disk(path, device=str(device), dtype="float32")
    if cfg.source == "disk":
        if cfg.path is None or not (Path(cfg.path) / "cfg.json").is_file():
            raise MissingResourceError(f"sae.path={cfg.path!r} is not a directory saved by sae_lens (no cfg.json there)")
        with _reading(Path(cfg.path), "an SAE saved by sae_lens (cfg.json and its weights)"):
            return SAE.load_from_disk(cfg.path, device=str(device), dtype="float32")
    if cfg.source == "toy_error_correction":
        from sensdir.toy_model import toy_sae

        return toy_sae(device=device)
    if cfg.source == "sae_lens":
        from sensdir.hub import hub_call, sae_hint

        return hub_call(
            sae_hint(cfg.release, cfg.sae_id),
            lambda: SAE.from_pretrained(cfg.release, cfg.sae_id, device=str(device), dtype="float32"),
        )
    raise ConfigError(f"sae.source={cfg.source!r} is unknown; valid choices: {', '.join(SaeSource.values())}")


def sae_hook_name(sae) -> str | None:
    return sae.cfg.metadata.hook_name


def check_site(model, sae, hook: str | None) -> Site:
    """The site must be a residual hook of this model, and the SAE must read exactly it.
    With no hook given, the site is the SAE's own hook."""
    if hook is None and sae is None:
        raise ConfigError("sae.source=none: set site.hook (e.g. site.hook=blocks.1.hook_resid_pre)")
    if hook is None:
        hook = sae_hook_name(sae)
        if hook is None:
            raise ConfigError("the SAE does not say which hook it reads; set site.hook")
    try:
        site = Site.parse(hook, model.cfg.n_layers)
    except SiteError as e:
        raise ConfigError(str(e)) from None
    if sae is None:
        return site
    sae_hook = sae_hook_name(sae)
    if sae_hook is not None and sae_hook != hook:
        raise ConfigError(
            f"the SAE reads {sae_hook!r} but site.hook is {hook!r}; set site.hook={sae_hook} or pick an SAE for {hook}"
        )
    if sae.cfg.d_in != model.cfg.d_model:
        raise ConfigError(f"the SAE's d_in is {sae.cfg.d_in} but the model's d_model at {hook} is {model.cfg.d_model}")
    return site
