"""The rows the embedded SAE family is trained and evaluated on: the embedded model's own
training mixture (issue 12), and the IOI END activations every card reports.

The model trains on rows of ``n_ctx`` tokens mixed in the proportions ``ROWS_MIX`` of
:mod:`sensdir.embedded.train` (69% prose, 15.5% IOI sentences, 15.5% first-letter statements):
prose windows start anywhere in the end-of-text-separated prose stream, task windows start at a
sentence boundary (the end-of-text token before a sentence) and run on over the following
sentences of their stream. The SAE rows are drawn the same way:

* ``train``: every window of the corpus train split (as before issue 12), and as many IOI and
  first-letter windows as keep the ``ROWS_MIX`` proportions, drawn with the seed (without
  replacement) among the sentence starts of the model's own task streams -- the sentences of
  :func:`sensdir.embedded.data.prepare` rebuilt from the same generators and data seed
  (:data:`MODEL_DATA_SEED`): ``tasks.ioi_train_texts(IOI_POOL)`` and the seen first-letter
  words' statements reshuffled ``FIRST_LETTER_SHUFFLES`` times.
* ``heldout``: windows of the corpus held-out split, and in the same proportions windows of IOI
  sentences of the held-out templates (with held-out name pairs: ``tasks.sample_ioi(...,
  "heldout_templates")``) and of the statements of the held-out (unseen) first-letter words,
  neither of which the model was trained on. Independent of the seed, like the prose.

:func:`ioi_end_activations` gives the activations at END (the last prompt token, where the IO
name is predicted) of the model's held-out-template IOI evaluation prompts, taken as the IOI
study (``sensdir.studies.ioi_supervised``) takes them: end-of-text token prepended, no padding.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from sensdir.embedded import tasks
from sensdir.embedded.data import IOI_POOL, first_letter_stream_texts, first_letter_words, shuffled_passes
from sensdir.embedded.sae_data import corpus_rows, eot_id, token_stream
from sensdir.embedded.train import ROWS_MIX

SOURCES: tuple[str, ...] = ("prose", "ioi", "first_letter")
MODEL_DATA_SEED = 0  # the seed sensdir.embedded.train prepares its data directory with
IOI_HELDOUT_SPLIT: tasks.IOISplit = "heldout_templates"
IOI_END_PROMPTS = 1000


@dataclasses.dataclass
class MixtureRows:
    rows: Tensor  # [n, n_ctx] token ids
    source: Tensor  # [n] index into SOURCES

    def counts(self) -> dict[str, int]:
        return {s: int((self.source == i).sum()) for i, s in enumerate(SOURCES)}


def task_row_counts(n_prose: int) -> tuple[int, int]:
    """IOI and first-letter rows that go with ``n_prose`` prose rows in ``ROWS_MIX``."""
    return round(n_prose * ROWS_MIX[1] / ROWS_MIX[0]), round(n_prose * ROWS_MIX[2] / ROWS_MIX[0])


def sentence_windows(stream: Tensor, eot: int, n_ctx: int, n_rows: int, seed: int) -> Tensor:
    """``n_rows`` windows of ``n_ctx`` tokens of ``stream``, each starting at a sentence start
    (an ``eot`` token), the starts drawn with ``seed`` without replacement."""
    starts = (stream == eot).nonzero()[:, 0]
    starts = starts[starts + n_ctx <= stream.numel()]
    if starts.numel() < n_rows:
        raise ValueError(f"a stream with {starts.numel()} sentence starts cannot give {n_rows} windows")
    pick = starts[torch.randperm(starts.numel(), generator=torch.Generator().manual_seed(seed))[:n_rows]]
    return stream[pick[:, None] + torch.arange(n_ctx)]


def task_texts(model, split: Literal["train", "heldout"], n_rows: int, n_ctx: int) -> tuple[list[str], list[str]]:
    """(IOI sentences, first-letter statements) whose streams the ``split`` task windows come from."""
    words = first_letter_words(model.tokenizer)
    if split == "train":
        return tasks.ioi_train_texts(IOI_POOL, seed=MODEL_DATA_SEED), first_letter_stream_texts(words, MODEL_DATA_SEED)
    # streams of about four times the windows' tokens (sentences of 7 tokens and more)
    n_sentences = max(64, 4 * n_rows * n_ctx // 7)
    rng = random.Random(f"sae-heldout-ioi:{IOI_HELDOUT_SPLIT}")
    ioi = [tasks.sample_ioi(rng, IOI_HELDOUT_SPLIT).text for _ in range(n_sentences)]
    unseen = [tasks.make_first_letter(w).text for w in tasks.split_words(words)[1]]
    if not unseen:
        raise ValueError("no held-out first-letter word in the tokenizer's vocabulary")
    fl = shuffled_passes(unseen, math.ceil(n_sentences / len(unseen)), "sae-heldout-first-letter")
    return ioi, fl


def mixture_rows(
    model, split: Literal["train", "heldout"], n_ctx: int, seed: int = 0, max_rows: int | None = None
) -> MixtureRows:
    """Rows of the training mixture (module docstring), shuffled: with ``seed`` for ``train``,
    with a fixed seed for ``heldout`` (so that any prefix, e.g. the CE rows, is a mixture).
    ``max_rows`` caps the total, prose limited to ``ROWS_MIX[0] * max_rows`` rows."""
    prose = corpus_rows(model, split, n_ctx, None, seed=seed if split == "train" else None)
    if max_rows is not None:
        prose = prose[: max(1, round(max_rows * ROWS_MIX[0]))]
    n_ioi, n_fl = task_row_counts(prose.shape[0])
    ioi_texts, fl_texts = task_texts(model, split, max(n_ioi, n_fl), n_ctx)
    eot = eot_id(model)
    draw_seed = seed if split == "train" else 0
    parts = [
        prose,
        sentence_windows(token_stream(model, ioi_texts), eot, n_ctx, n_ioi, draw_seed * 1_000_003 + 1),
        sentence_windows(token_stream(model, fl_texts), eot, n_ctx, n_fl, draw_seed * 1_000_003 + 2),
    ]
    rows = torch.cat(parts)
    source = torch.cat([torch.full((p.shape[0],), i, dtype=torch.long) for i, p in enumerate(parts)])
    perm = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(draw_seed * 1_000_003 + 3))
    return MixtureRows(rows[perm], source[perm])


@torch.no_grad()
def ioi_end_activations(model, sites: Sequence[str], n: int = IOI_END_PROMPTS, seed: int = 0) -> dict[str, Tensor]:
    """``{site: [n, d]}`` END activations of the model's held-out-template IOI evaluation
    prompts (``tasks.ioi_eval_set("heldout_templates", n, seed)``), as the IOI study takes them."""
    from sensdir.site import Site
    from sensdir.tasks.ioi_dictionary import PromptRuns

    prompts = [e.prompt for e in tasks.ioi_eval_set(IOI_HELDOUT_SPLIT, n, seed=seed)]
    out = {}
    for s in sites:
        runs = PromptRuns(model, Site.parse(s, model.cfg.n_layers), prompts, batch=256, prepend_bos=True)
        out[s] = runs.site_last().float().cpu()
    return out


@torch.no_grad()
def end_errors(sae, x: Tensor) -> dict[str, float]:
    """``rel_sq_error`` = sum ||x - x_hat||^2 / sum ||x||^2 and ``fvu`` = the same error over
    sum ||x - mean(x)||^2 (the IOI study's ``fvu`` column), x_hat = decode(encode(x))."""
    x64 = x.double()
    err = float(((x64 - sae.decode(sae.encode(x.float())).double()) ** 2).sum())
    return {
        "rel_sq_error": err / float((x64**2).sum()),
        "fvu": err / float(((x64 - x64.mean(0)) ** 2).sum()),
    }
