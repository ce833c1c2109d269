"""Tokens and activations the embedded SAE family is trained and evaluated on (see
:mod:`sensdir.embedded.train_saes` for the layout: end-of-text-separated prose cut into
``n_ctx`` windows, position 0 excluded).

Apart from the training loop so that tests and the shipped-SAE checks can rebuild exactly the
same activations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import torch

from sensdir.site import layer_of_hook


def random_model(seed: int = 0, d_vocab: int = 8192):
    """A randomly initialised HookedTransformer with the embedded model's shape (for smoke tests)."""
    from sensdir.model_backend import build_model, model_config

    cfg = model_config(
        n_layers=4,
        d_model=256,
        n_heads=8,
        d_head=32,
        d_mlp=1024,
        act_fn="gelu_new",
        normalization_type="LN",
        d_vocab=d_vocab,
        n_ctx=128,
        seed=seed,
        device="cpu",
    )
    return build_model(cfg, move_to_device=True)


def eot_id(model) -> int:
    """The end-of-text token that separates documents (the tokenizer's BOS/EOS; 0 for the
    embedded tokenizer)."""
    tok = getattr(model, "tokenizer", None)
    for attr in ("eos_token_id", "bos_token_id"):
        v = getattr(tok, attr, None) if tok is not None else None
        if v is not None:
            return int(v)
    raise ValueError("the tokenizer has neither an EOS nor a BOS token")


def token_stream(model, docs: Sequence[str]) -> torch.Tensor:
    """All documents tokenized (no special tokens added), each preceded by the end-of-text
    token -- the same layout the embedded model was trained on."""
    tok = model.tokenizer
    eot = eot_id(model)
    out: list[int] = []
    for i in range(0, len(docs), 256):
        for ids in tok(list(docs[i : i + 256]), add_special_tokens=False)["input_ids"]:
            out.append(eot)
            out.extend(ids)
    return torch.tensor(out, dtype=torch.long)


def stream_rows(stream: torch.Tensor, n_ctx: int) -> torch.Tensor:
    """Cut a token stream into consecutive non-overlapping ``[rows, n_ctx]`` windows (a trailing
    partial window is dropped). Windows start anywhere in a document, as the embedded model's
    training windows do; position 0 is excluded from SAE data downstream."""
    n = stream.numel() // n_ctx
    if n == 0:
        raise ValueError(f"a stream of {stream.numel()} tokens holds no window of {n_ctx}")
    return stream[: n * n_ctx].view(n, n_ctx).clone()


def corpus_rows(
    model, split: Literal["train", "heldout"], n_ctx: int, max_rows: int | None = None, seed: int | None = None
) -> torch.Tensor:
    """Windows of the embedded prose corpus (``sensdir.embedded.corpus``). With ``seed`` the
    windows are shuffled with it before ``max_rows`` are kept; else the first ``max_rows``."""
    from sensdir.embedded import corpus

    rows = stream_rows(token_stream(model, corpus.documents(split)), n_ctx)
    if seed is not None:
        rows = rows[torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))]
    return rows[:max_rows] if max_rows is not None else rows


def load_model():
    """The embedded model (``sensdir.embedded.load_embedded_model``, else the asset directory)."""
    try:
        from sensdir.embedded import load_embedded_model
    except ImportError:
        from sensdir.loading import embedded_model_dir, load_model_dir

        return load_model_dir(embedded_model_dir())
    return load_embedded_model()


def synthetic_rows(model, n_rows: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n_ctx = model.cfg.n_ctx
    return torch.randint(0, model.cfg.d_vocab, (n_rows, n_ctx), generator=g)


@torch.no_grad()
def collect_activations(model, rows: torch.Tensor, sites: Sequence[str], batch_rows: int = 64) -> dict[str, torch.Tensor]:
    """Residual activations at ``sites`` for every position but 0: ``{site: [rows*(n_ctx-1), d]}``."""
    stop = max(layer_of_hook(s) for s in sites) + 1
    n_rows, n_ctx = rows.shape
    d = model.cfg.d_model
    out = {s: torch.empty(n_rows * (n_ctx - 1), d, dtype=torch.float32) for s in sites}
    names = set(sites)
    per = n_ctx - 1
    for i in range(0, n_rows, batch_rows):
        batch = rows[i : i + batch_rows].to(model.cfg.device)
        _, cache = model.run_with_cache(batch, stop_at_layer=stop, names_filter=lambda n: n in names)
        for s in sites:
            a = cache[s][:, 1:, :].reshape(-1, d).float().cpu()
            out[s][i * per : i * per + a.shape[0]] = a
    return out


def acts_key(model, train_rows: torch.Tensor, held_rows: torch.Tensor, sites: Sequence[str]) -> str:
    """Hash of everything the activation buffers depend on: weights, token rows, sites."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(train_rows.numpy().tobytes())
    h.update(held_rows.numpy().tobytes())
    h.update(repr(sorted(sites)).encode())
    return h.hexdigest()[:16]
