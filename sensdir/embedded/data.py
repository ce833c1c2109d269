"""Tokenizer and tokenized training / evaluation data for the embedded model.

:func:`prepare` writes a self-contained data directory (numpy arrays + JSON) from which
``sensdir.embedded.train`` trains with nothing but torch and numpy -- so the directory can be
built on one machine and training run on another (e.g. a GPU machine without
``transformer_lens``):

* ``tokenizer/`` -- the byte-level BPE tokenizer (``PreTrainedTokenizerFast`` layout);
* ``prose_train.npy`` / ``prose_heldout.npy`` -- uint16 token streams of the corpus splits,
  every document preceded by the end-of-text token;
* ``ioi_train.npy`` / ``first_letter_train.npy`` -- uint16 streams of task sentences, each
  preceded by the end-of-text token;
* ``eval.json`` -- tokenized evaluation prompts (IOI held-out pairs / templates, first-letter
  seen / unseen words) and the character count of the held-out prose;
* ``manifest.json`` -- provenance (Python version, corpus stats, seed, sizes).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path
from typing import Literal

import numpy as np

from sensdir.tasks import ioi
from sensdir.tasks.first_letter import LETTERS

from . import corpus, tasks

EOT = corpus.EOT
VOCAB_SIZE = 4096
TOKENIZER_IOI_SENTENCES = 20_000
IOI_POOL = 200_000
FIRST_LETTER_SHUFFLES = 32
EVAL_SIZES = {"ioi_train": 500, "ioi_heldout_pairs": 1000, "ioi_heldout_templates": 1000, "first_letter_seen": 1000}


def train_tokenizer(vocab_size: int = VOCAB_SIZE):
    """Byte-level BPE on the training split of the corpus plus IOI sentences and letter lines
    (so that the names and " A".." Z" become single tokens).  Deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    letters = [" ".join(f"the first letter: {c}." for c in LETTERS)] * 200
    texts = corpus.documents("train") + tasks.ioi_train_texts(TOKENIZER_IOI_SENTENCES, seed=12345) + letters
    tok.train_from_iterator(texts, trainer=trainer)
    check_tokenizer(tok)
    return tok


def check_tokenizer(tok) -> None:
    assert tok.token_to_id(EOT) == 0, "end-of-text must be token 0"
    bad = [w for w in [" " + n for n in ioi.NAMES] + [" " + c for c in LETTERS] if len(tok.encode(w).ids) != 1]
    if bad:
        raise RuntimeError(f"not single tokens: {bad}")


def save_tokenizer(tok, directory: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=EOT, model_max_length=128
    )
    fast.save_pretrained(str(directory))


def load_tokenizer(directory: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))


def first_letter_words(tok) -> list[str]:
    return tasks.select_words(tok.get_vocab().keys(), corpus.documents("train"))


def shuffled_passes(texts: list[str], passes: int, key: str) -> list[str]:
    """``passes`` copies of ``texts`` one after the other, each in a new order (one
    ``random.Random(key)`` shuffling the list in place pass after pass)."""
    items = list(texts)
    rng = random.Random(key)
    out: list[str] = []
    for _ in range(passes):
        rng.shuffle(items)
        out.extend(items)
    return out


def first_letter_stream_texts(words: list[str], seed: int = 0, passes: int = FIRST_LETTER_SHUFFLES) -> list[str]:
    """The first-letter sentences in the order of the training stream: the seen words'
    statements, ``passes`` times, reshuffled every pass."""
    return shuffled_passes(tasks.first_letter_train_texts(words), passes, f"first-letter-stream:{seed}")


def _stream(tok, texts: list[str]) -> np.ndarray:
    out: list[int] = []
    for enc in tok.encode_batch(texts):
        out.append(0)
        out.extend(enc.ids)
    arr = np.asarray(out, dtype=np.int64)
    assert arr.max() < 65536
    return arr.astype(np.uint16)


def _single(tok, text: str) -> int:
    ids = tok.encode(text).ids
    if len(ids) != 1:
        raise RuntimeError(f"{text!r} is not a single token: {ids}")
    return ids[0]


def eval_data(tok, seed: int = 0) -> dict:
    """Tokenized evaluation prompts (each prompt begins with the end-of-text token as BOS)."""
    out: dict = {}
    ioi_splits: tuple[tuple[str, tasks.IOISplit], ...] = (
        ("ioi_train", "train"),
        ("ioi_heldout_pairs", "heldout_pairs"),
        ("ioi_heldout_templates", "heldout_templates"),
    )
    for key, split in ioi_splits:
        exs = tasks.ioi_eval_set(split, EVAL_SIZES[key], seed=seed)
        encs = tok.encode_batch([e.prompt for e in exs])
        out[key] = [
            {"tokens": [0] + enc.ids, "answer": _single(tok, e.answer), "wrong": _single(tok, e.s_answer), "attrs": e.to_dict()}
            for e, enc in zip(exs, encs)
        ]
    words = first_letter_words(tok)
    letter_splits: tuple[tuple[str, Literal["seen", "unseen"], int | None], ...] = (
        ("first_letter_seen", "seen", EVAL_SIZES["first_letter_seen"]),
        ("first_letter_unseen", "unseen", None),
    )
    for key, letter_split, n in letter_splits:
        exs_fl = tasks.first_letter_eval_set(words, letter_split, n=n, seed=seed)
        encs = tok.encode_batch([e.prompt for e in exs_fl])
        out[key] = [
            {"tokens": [0] + enc.ids, "answer": _single(tok, e.answer), "attrs": e.to_dict()} for e, enc in zip(exs_fl, encs)
        ]
    out["prose_heldout_characters"] = sum(len(d) for d in corpus.documents("heldout"))
    out["first_letter_words"] = {"seen": len(tasks.split_words(words)[0]), "unseen": len(tasks.split_words(words)[1])}
    return out


def prepare(data_dir: Path, tokenizer_dir: Path | None = None, seed: int = 0) -> dict:
    """Build ``data_dir`` (see module docstring).  ``tokenizer_dir``: reuse that tokenizer
    instead of training one.  Returns the manifest."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    tok_out = data_dir / "tokenizer"
    if tokenizer_dir is not None:
        tok = load_tokenizer(tokenizer_dir)
        check_tokenizer(tok)
        if Path(tokenizer_dir).resolve() != tok_out.resolve():
            shutil.rmtree(tok_out, ignore_errors=True)
            shutil.copytree(tokenizer_dir, tok_out)
    else:
        tok = train_tokenizer()
        save_tokenizer(tok, tok_out)
    np.save(data_dir / "prose_train.npy", _stream(tok, corpus.documents("train")))
    np.save(data_dir / "prose_heldout.npy", _stream(tok, corpus.documents("heldout")))
    np.save(data_dir / "ioi_train.npy", _stream(tok, tasks.ioi_train_texts(IOI_POOL, seed=seed)))
    words = first_letter_words(tok)
    np.save(data_dir / "first_letter_train.npy", _stream(tok, first_letter_stream_texts(words, seed)))
    ev = eval_data(tok, seed=0)
    (data_dir / "eval.json").write_text(json.dumps(ev))
    manifest = {
        "python": sys.version.split()[0],
        "corpus": corpus.stats(),
        "seed": seed,
        "vocab_size": tok.get_vocab_size(),
        "tokens": {
            name: int(np.load(data_dir / f"{name}.npy").shape[0])
            for name in ("prose_train", "prose_heldout", "ioi_train", "first_letter_train")
        },
        "first_letter_words": ev["first_letter_words"],
        "ioi": {
            "names": len(ioi.NAMES),
            "templates": len(ioi.TEMPLATES),
            "heldout_templates": sorted(ioi.HELDOUT_TEMPLATES),
            "train_pool": IOI_POOL,
        },
    }
    (data_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--tokenizer", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(prepare(a.data_dir, a.tokenizer, a.seed), indent=2))
