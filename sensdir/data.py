"""Prompts: the first ``n_ctx`` tokens of documents, in a seeded random order.

The order is split into three disjoint sets (METHODS §1): ``stats`` prompts (mu, Sigma,
firing frequencies), ``pool`` prompts (the "other real activations" targets come from
them) and ``base`` prompts (the ones perturbed). Stats and pool come first so that changing
``n_prompts`` never changes them.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

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
    """The shuffled stream's texts: first the rows prefetched by ``sensdir-prefetch`` (the
    same rows, in the same order; ``sensdir.data_cache``), then the stream past them."""
    if not cfg.dataset:
        raise ConfigError("data.source=hf needs data.dataset (e.g. Skylion007/openwebtext)")
    from sensdir import data_cache

    local = None if data_cache.is_local(cfg) else data_cache.path_for(cfg, seed)
    n = 0
    if local is not None and data_cache.rows_in(local, cfg, seed):
        for text in data_cache.read_texts(local, cfg):
            n += 1
            yield text
    yield from itertools.islice(hf_texts(cfg, seed, prefetched=(local, n) if n else None), n, None)


def hf_texts(cfg: DataConfig, seed: int, prefetched: tuple[Path | None, int] | None = None) -> Iterator[str]:
    """The texts of ``cfg``'s dataset, streamed by ``datasets`` and shuffled with ``seed``.
    ``prefetched``: (the prefetched file, its rows) when a job needs more rows than it holds."""
    import datasets

    from sensdir.data_cache import SHUFFLE_BUFFER
    from sensdir.errors import MissingResourceError
    from sensdir.hub import dataset_hint, hub_call

    kwargs = {"split": cfg.split, "streaming": True}
    if cfg.data_files:
        kwargs["data_files"] = cfg.data_files
    name, how = dataset_hint(str(cfg.dataset))
    if prefetched is not None:
        name = f"{name} past the {prefetched[1]} rows prefetched to {prefetched[0]}"
        how = f"Rerun sensdir-prefetch with this job's overrides, where the hub is reachable, to prefetch more rows. {how}"
    try:
        ds = hub_call((name, how), lambda: datasets.load_dataset(cfg.dataset, cfg.dataset_config, **kwargs))
    except MissingResourceError:
        raise
    except FileNotFoundError as e:  # e.g. data.data_files names no local file
        raise MissingResourceError(f"cannot load dataset {cfg.dataset!r} (data_files={cfg.data_files!r}): {e}") from None
    ds = ds.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER)
    for row in ds:
        yield row[cfg.text_column]


def prompt_ids(doc: str, tokenizer, cfg: DataConfig) -> list[int] | None:
    """The prompt a document gives (its first ``n_ctx`` tokens, BOS first when
    ``prepend_bos``), or None when it is shorter."""
    bos = [tokenizer.bos_token_id] if cfg.prepend_bos and tokenizer.bos_token_id is not None else []
    want = cfg.n_ctx - len(bos)
    ids = tokenizer.encode(doc, add_special_tokens=False)
    return bos + ids[:want] if len(ids) >= want else None


def _prompts(docs: Iterable[str], tokenizer, cfg: DataConfig, need: int) -> list[list[int]]:
    out: list[list[int]] = []
    for doc in docs:
        ids = prompt_ids(doc, tokenizer, cfg)
        if ids is not None:
            out.append(ids)
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
