"""Prompts: the first ``n_ctx`` tokens of documents, in a seeded random order.

The order is split into three disjoint sets (METHODS §1): ``stats`` prompts (mu, Sigma,
firing frequencies), ``pool`` prompts (the "other real activations" targets come from
them) and ``base`` prompts (the ones perturbed). Stats and pool come first so that changing
``n_prompts`` never changes them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from sensdir.config import DataConfig, DataSource
from sensdir.errors import ConfigError

_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class PromptSets:
    stats_NT: Int[Tensor, "n_stats T"]
    pool_PT: Int[Tensor, "n_pool T"]
    base_BT: Int[Tensor, "n_prompts T"]
    base_index_B: Int[Tensor, " n_prompts"]  # global index of each base prompt in the order


def _documents(cfg: DataConfig, seed: int) -> Iterator[str]:
    if cfg.source == "embedded":
        from sensdir.loading import embedded_documents

        # (choice) The embedded corpus has one document per stdlib file, too few to draw
        # thousands of prompts from; its "documents" for prompting are the paragraphs of the
        # held-out files, in a seeded random order.
        docs = [p.strip() for d in embedded_documents("heldout") for p in _PARAGRAPH.split(d) if p.strip()]
        random.Random(seed).shuffle(docs)
        yield from docs
    elif cfg.source == "hf":
        yield from _hf_documents(cfg, seed)
    else:
        raise ConfigError(f"data.source={cfg.source!r} is unknown; valid choices: {', '.join(DataSource.values())}")


def _hf_documents(cfg: DataConfig, seed: int) -> Iterator[str]:
    if not cfg.dataset:
        raise ConfigError("data.source=hf needs data.dataset (e.g. Skylion007/openwebtext)")
    import datasets

    from sensdir.errors import MissingResourceError
    from sensdir.hub import dataset_hint, hub_call

    kwargs = {"split": cfg.split, "streaming": True}
    if cfg.data_files:
        kwargs["data_files"] = cfg.data_files
    try:
        ds = hub_call(dataset_hint(cfg.dataset), lambda: datasets.load_dataset(cfg.dataset, cfg.dataset_config, **kwargs))
    except MissingResourceError:
        raise
    except FileNotFoundError as e:  # e.g. data.data_files names no local file
        raise MissingResourceError(f"cannot load dataset {cfg.dataset!r} (data_files={cfg.data_files!r}): {e}") from None
    ds = ds.shuffle(seed=seed, buffer_size=10_000)
    for row in ds:
        yield row[cfg.text_column]


def _prompts(docs: Iterable[str], tokenizer, cfg: DataConfig, need: int) -> list[list[int]]:
    bos = [tokenizer.bos_token_id] if cfg.prepend_bos and tokenizer.bos_token_id is not None else []
    want = cfg.n_ctx - len(bos)
    out: list[list[int]] = []
    for doc in docs:
        ids = tokenizer.encode(doc, add_special_tokens=False)
        if len(ids) >= want:
            out.append(bos + ids[:want])
            if len(out) == need:
                break
    return out


def load_prompts(cfg: DataConfig, tokenizer, seed: int) -> PromptSets:
    if cfg.n_ctx < 2:
        raise ConfigError(f"data.n_ctx must be at least 2, got {cfg.n_ctx}")
    for name in ("n_prompts", "n_stats", "n_pool"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"data.{name} must be positive, got {getattr(cfg, name)}")
    need = cfg.n_stats + cfg.n_pool + cfg.n_prompts
    prompts = _prompts(_documents(cfg, seed), tokenizer, cfg, need)
    if len(prompts) < need:
        raise ConfigError(
            f"the data source {cfg.source!r} holds only {len(prompts)} documents of at least {cfg.n_ctx} tokens, "
            f"but n_stats + n_pool + n_prompts = {cfg.n_stats} + {cfg.n_pool} + {cfg.n_prompts} = {need}; "
            f"lower data.n_prompts / data.n_stats / data.n_pool or data.n_ctx"
        )
    toks = torch.tensor(np.asarray(prompts, dtype=np.int64))
    a, b = cfg.n_stats, cfg.n_stats + cfg.n_pool
    return PromptSets(toks[:a], toks[a:b], toks[b:need], torch.arange(b, need))


def shard_slice(n: int, shard: int, shards: int) -> slice:
    """Contiguous, balanced split of ``n`` items into ``shards`` parts."""
    bounds = np.linspace(0, n, shards + 1).round().astype(int)
    return slice(int(bounds[shard]), int(bounds[shard + 1]))
