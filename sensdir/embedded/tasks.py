"""Synthetic task sentences mixed into the embedded model's training data.

Two generators, both pure Python and driven by a seeded :class:`random.Random`:

* **Indirect object identification (IOI)** -- "When Mary and John went to the store, John gave
  the drink to Mary".  Two names are introduced, one of them (the subject ``s``) is repeated, and
  the sentence ends with the other one (the indirect object ``io``).  Pattern ``ABB`` introduces
  the IO first (``io_pos = 0``), pattern ``BAB`` second (``io_pos = 1``).  Some unordered name
  pairs (:func:`is_heldout_pair`) and some templates (:data:`HELDOUT_TEMPLATES`) never occur in
  training.
* **First letter** -- " cat has the first letter: C".  The word is written with a leading space so
  that it is the same token as the word inside running prose.  Words come from the tokenizer's
  vocabulary (see :func:`select_words`); some (:func:`is_heldout_word`) never occur in training.

Evaluation helpers return :class:`IOIExample` / :class:`FirstLetterExample` objects whose
``prompt`` stops right before the answer and whose ``answer`` (a single token with a leading
space) is the expected next token; the other attributes (``io``, ``s``, ``io_pos``, ``word``,
``letter``, ...) are kept for supervised analyses.  The IOI names, places, objects and
templates are those of :mod:`sensdir.tasks.ioi` (one set for training and evaluation).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from sensdir.tasks.first_letter import SUFFIX
from sensdir.tasks.ioi import (
    HELDOUT_TEMPLATES,
    NAMES,
    OBJECTS,
    PLACES,
    TEMPLATES,
    TRAIN_TEMPLATES,
    IOIExample,
    IOISource,
    make_prompt,
)

# make_ioi takes an index into every template, held-out ones included (sample_ioi chooses it).
_ALL_TEMPLATES = IOISource(TEMPLATES, NAMES, PLACES, OBJECTS)
FIRST_LETTER_TEMPLATE = " {word}" + SUFFIX


def _hash_mod(text: str, mod: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % mod


def is_heldout_pair(a: str, b: str) -> bool:
    """About 10% of unordered name pairs never occur in training."""
    x, y = sorted((a, b))
    return _hash_mod(f"pair:{x}:{y}", 10) == 0


def is_heldout_word(word: str) -> bool:
    """About 15% of first-letter words never occur in training."""
    return _hash_mod(f"word:{word}", 100) < 15


@dataclass(frozen=True)
class FirstLetterExample:
    prompt: str
    answer: str  # " " + letter
    word: str
    letter: str

    @property
    def text(self) -> str:
        return self.prompt + self.answer

    def to_dict(self) -> dict:
        return asdict(self)


IOISplit = Literal["train", "heldout_pairs", "heldout_templates"]


def make_ioi(io: str, s: str, io_pos: int, template: int, place: str, obj: str) -> IOIExample:
    return make_prompt(_ALL_TEMPLATES, io, s, io_pos, template, place, obj)


def sample_ioi(rng: random.Random, split: IOISplit = "train", templates: Sequence[int] | None = None) -> IOIExample:
    """One IOI example.

    ``train``: training templates and name pairs; ``heldout_pairs``: training templates with
    held-out name pairs; ``heldout_templates``: held-out templates with held-out name pairs.
    """
    if split in ("train", "heldout_pairs"):
        allowed = TRAIN_TEMPLATES
    elif split == "heldout_templates":
        allowed = tuple(sorted(HELDOUT_TEMPLATES))
    else:
        raise ValueError(f"unknown IOI split {split!r}")
    if templates is not None:
        allowed = tuple(t for t in allowed if t in set(templates))
    want_heldout_pair = split != "train"
    while True:
        io, s = rng.sample(NAMES, 2)
        if is_heldout_pair(io, s) == want_heldout_pair:
            break
    return make_ioi(io, s, rng.randrange(2), rng.choice(allowed), rng.choice(PLACES), rng.choice(OBJECTS))


def ioi_eval_set(split: IOISplit, n: int, seed: int = 0) -> list[IOIExample]:
    rng = random.Random(f"ioi-eval:{split}:{seed}")
    return [sample_ioi(rng, split) for _ in range(n)]


def ioi_train_texts(n: int, seed: int = 0, templates: Sequence[int] | None = None) -> list[str]:
    """``n`` training sentences (prompt + answer); ``templates`` restricts the templates."""
    rng = random.Random(f"ioi-train:{seed}")
    return [sample_ioi(rng, "train", templates).text for _ in range(n)]


_WORD = re.compile(r"[a-z]{3,}")


def select_words(vocab: Iterable[str], corpus_texts: Sequence[str], min_count: int = 5) -> list[str]:
    """First-letter words: lowercase alphabetic words (3+ letters) that are one vocabulary token
    with a leading space (byte-level BPE spells it ``"Ġword"``) and occur at least ``min_count``
    times as whole words in ``corpus_texts``.  Sorted alphabetically."""
    candidates = {t[1:] for t in vocab if t.startswith("\u0120") and _WORD.fullmatch(t[1:])}
    counts: dict[str, int] = {}
    for text in corpus_texts:
        for w in re.findall(r"\b[a-z]{3,}\b", text):
            if w in candidates:
                counts[w] = counts.get(w, 0) + 1
    return sorted(w for w, c in counts.items() if c >= min_count)


def make_first_letter(word: str) -> FirstLetterExample:
    letter = word[0].upper()
    return FirstLetterExample(prompt=FIRST_LETTER_TEMPLATE.format(word=word), answer=" " + letter, word=word, letter=letter)


def split_words(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """(seen, unseen) words."""
    seen = [w for w in words if not is_heldout_word(w)]
    unseen = [w for w in words if is_heldout_word(w)]
    return seen, unseen


def first_letter_eval_set(
    words: Sequence[str], split: Literal["seen", "unseen"], n: int | None = None, seed: int = 0
) -> list[FirstLetterExample]:
    seen, unseen = split_words(words)
    pool = seen if split == "seen" else unseen
    if n is not None and n < len(pool):
        pool = random.Random(f"fl-eval:{split}:{seed}").sample(pool, n)
    return [make_first_letter(w) for w in pool]


def first_letter_train_texts(words: Sequence[str]) -> list[str]:
    seen, _ = split_words(words)
    return [make_first_letter(w).text for w in seen]
