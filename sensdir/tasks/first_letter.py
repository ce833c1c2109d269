"""The first-letter task (Chanin et al. [C24]; SAEBench's absorption eval), METHODS §6:
vocabulary, in-context prompts, activations at the word position and the letter probes.

Shared by the ``probe`` direction type and the ``absorption`` study, so it lives outside both.

Every vocabulary token that is alphabetic (after an optional leading space) and at least
``min_word_len`` letters long is a *word*, labelled with its first letter (A-Z). The words are
shuffled with the seed and split ``train_frac`` / rest. Each word gets an in-context prompt

    [BOS] ex_1 SEP ex_2 SEP ... ex_n SEP word " has the first letter:"

where ``ex_i = w_i " has the first letter:" " W_i"`` for ``n_icl_examples`` other words of
the same split, and ``SEP`` is ``separator`` (``None``: the BOS / end-of-text token, which is
how the embedded model saw the task in training; SAEBench uses ``"\\n"`` on GPT-2). The prompt
is built from token ids, so the word is exactly one token and its position is known; the
activation is read at the *word* position at the SAE's own hook (a ``resid_pre`` SAE of layer L
reads ``blocks.L.hook_resid_pre``; SAEBench reads ``hook_resid_post`` of the layer number it
is given, an off-by-one for ``resid_pre`` SAEs that we do not reproduce). The model is causal,
so the tokens after the word cannot change that activation: only the tokens up to and
including the word are run (exactly the same numbers, less compute).

Probes: 26 one-vs-rest logistic regressions on the train split's activations, fitted jointly
(full batch, L-BFGS, float64) on the class-balanced binary cross-entropy (positives weighted
by n_neg / n_pos, as SAEBench's probes) plus ``l2 / 2 * ||W||^2``. A probe predicts its letter
where its logit is > 0; F1 is measured on the test split.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.errors import ConfigError
from sensdir.site import SiteError, layer_of_hook

LETTERS: tuple[str, ...] = tuple(string.ascii_uppercase)
SUFFIX = " has the first letter:"
_ALPHA = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class FirstLetterTask:
    """How the first-letter data set is built (shared by the ``probe`` direction and the
    ``absorption`` study)."""

    n_icl_examples: int = 4
    separator: str | None = None  # None: the model's BOS / end-of-text token
    min_word_len: int = 1  # SAEBench keeps single letters too
    max_words: int | None = None  # None: every alphabetic token; else a seeded subsample
    train_frac: float = 0.8
    seed: int = 0
    batch: int = 256

    @classmethod
    def from_config(cls, cfg: object, **overrides: object) -> FirstLetterTask:
        """The task a config describes: its fields of the same names, then ``overrides``."""
        fields = {f: getattr(cfg, f) for f in cls.__dataclass_fields__ if hasattr(cfg, f)}
        return cls(**{**fields, **overrides})  # type: ignore[arg-type]

    def check(self) -> None:
        if self.n_icl_examples < 0 or self.min_word_len < 1 or self.batch < 1:
            raise ConfigError("first-letter task: n_icl_examples >= 0, min_word_len >= 1 and batch >= 1 are required")
        if not 0.0 < self.train_frac < 1.0:
            raise ConfigError(f"first-letter task: train_frac must be in (0, 1), got {self.train_frac}")
        if self.max_words is not None and self.max_words < 2:
            raise ConfigError(f"first-letter task: max_words must be at least 2, got {self.max_words}")


@dataclass
class FirstLetterData:
    words: list[str]  # the word as decoded (leading space kept)
    token_ids: list[int]
    letter_N: Int[Tensor, " N"]  # index into LETTERS
    train_N: torch.Tensor  # bool: in the train split
    acts_ND: Float[Tensor, "N d"]  # site activation at the word position (float32, CPU)


def alpha_vocab(tokenizer, min_len: int = 2) -> list[tuple[int, str]]:
    """(token id, decoded text) of every token whose text is ASCII letters, with an optional
    leading space, at least ``min_len`` letters long; sorted by id."""
    out = []
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for tid in sorted(set(tokenizer.get_vocab().values())):
        if tid in special:
            continue
        text = tokenizer.decode([tid])
        core = text[1:] if text.startswith(" ") else text
        if len(core) >= min_len and core.isascii() and _ALPHA.fullmatch(core):
            out.append((tid, text))
    return out


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def build_prompts(model, vocab: list[tuple[int, str]], task: FirstLetterTask, train_N: list[bool]) -> list[list[int]]:
    """Token ids of each word's prompt up to and including the word (see the module docstring:
    what follows the word cannot change the activation there)."""
    tok = model.tokenizer
    bos = tok.bos_token_id if getattr(model.cfg, "default_prepend_bos", True) else None
    if task.separator is None:
        if tok.bos_token_id is None:
            raise ConfigError("first-letter task: separator=None needs a tokenizer with a BOS token; set a separator")
        sep = [tok.bos_token_id]
    else:
        sep = _ids(tok, task.separator)
    suffix = _ids(tok, SUFFIX)
    answers = {L: _ids(tok, " " + L) for L in LETTERS}
    rng = random.Random(f"first-letter-icl:{task.seed}")
    pools = {s: [i for i, t in enumerate(train_N) if t == s] for s in (True, False)}
    prompts = []
    for i, (tid, _text) in enumerate(vocab):
        ids = [bos] if bos is not None else []
        pool = pools[train_N[i]]
        if task.n_icl_examples:
            others = [j for j in rng.sample(pool, min(len(pool), task.n_icl_examples + 1)) if j != i][: task.n_icl_examples]
            for j in others:
                jt, jtext = vocab[j]
                ids += [jt, *suffix, *answers[jtext.strip()[0].upper()], *sep]
        prompts.append(ids + [tid])
    return prompts


@torch.inference_mode()
def word_activations(model, hook: str, prompts: list[list[int]], batch: int = 256) -> Float[Tensor, "N d"]:
    """The activation at ``hook`` at the last token of each prompt (prompts right-padded:
    the model is causal, so padding after a position does not change it)."""
    try:
        stop_at = layer_of_hook(hook) + 1
    except SiteError as e:
        raise ConfigError(f"first-letter task: {e}") from None
    n_ctx = model.cfg.n_ctx
    too_long = max(len(p) for p in prompts)
    if too_long > n_ctx:
        raise ConfigError(
            f"first-letter task: prompts of {too_long} tokens exceed the model's n_ctx={n_ctx}; lower n_icl_examples"
        )
    device = model.cfg.device
    out = []
    for s in range(0, len(prompts), batch):
        chunk = prompts[s : s + batch]
        T = max(len(p) for p in chunk)
        toks = torch.zeros(len(chunk), T, dtype=torch.long)
        for r, p in enumerate(chunk):
            toks[r, : len(p)] = torch.tensor(p)
        last = torch.tensor([len(p) - 1 for p in chunk])
        _, cache = model.run_with_cache(toks.to(device), names_filter=hook, stop_at_layer=stop_at)
        acts = cache[hook]
        out.append(acts[torch.arange(len(chunk), device=acts.device), last.to(acts.device)].float().cpu())
    return torch.cat(out)


def first_letter_data(model, hook: str, task: FirstLetterTask) -> FirstLetterData:
    task.check()
    vocab = alpha_vocab(model.tokenizer, task.min_word_len)
    rng = random.Random(f"first-letter-words:{task.seed}")
    rng.shuffle(vocab)
    if task.max_words is not None:
        vocab = vocab[: task.max_words]
    if len(vocab) < 2:
        raise ConfigError(
            f"first-letter task: the tokenizer has {len(vocab)} alphabetic tokens of >= {task.min_word_len} letters; need at least 2"
        )
    n_train = min(max(1, int(len(vocab) * task.train_frac)), len(vocab) - 1)
    train = [i < n_train for i in range(len(vocab))]
    prompts = build_prompts(model, vocab, task, train)
    acts = word_activations(model, hook, prompts, task.batch)
    return FirstLetterData(
        words=[t for _, t in vocab],
        token_ids=[i for i, _ in vocab],
        letter_N=torch.tensor([LETTERS.index(t.strip()[0].upper()) for _, t in vocab]),
        train_N=torch.tensor(train),
        acts_ND=acts,
    )


def fit_logistic(
    X_ND: Float[Tensor, "N d"], Y_NC: Float[Tensor, "N C"], l2: float = 1e-3, balanced: bool = True, max_iter: int = 200
) -> tuple[Float[Tensor, "C d"], Float[Tensor, " C"]]:
    """C independent logistic regressions, fitted jointly: minimises, per column c,
    mean_n w_nc * BCE(x_n . W_c + b_c, y_nc) + l2 / 2 * ||W_c||^2 with w = n_neg / n_pos on
    positives (1 elsewhere) when ``balanced``. Full batch, L-BFGS, float64 (strictly convex
    for l2 > 0: a unique optimum, reached to the tolerance). Returns float32 (W, b)."""
    with torch.inference_mode(False):  # callers may hold inference tensors (model activations)
        return _fit_logistic(X_ND.detach().double().cpu().clone(), Y_NC.detach().double().cpu().clone(), l2, balanced, max_iter)


def _fit_logistic(X: Tensor, Y: Tensor, l2: float, balanced: bool, max_iter: int) -> tuple[Tensor, Tensor]:
    mu = X.mean(0)
    Xc = X - mu  # centring changes only b, and makes the problem better conditioned
    n_pos = Y.sum(0)
    pos_w = ((len(Y) - n_pos) / n_pos.clamp_min(1.0)) if balanced else torch.ones_like(n_pos)
    weight = torch.where(Y > 0, pos_w, torch.ones_like(Y))
    W = torch.zeros(Y.shape[1], X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(Y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        z = Xc @ W.T + b
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, Y, weight=weight, reduction="none").mean(0)).sum()
        loss = loss + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    W = W.detach()
    return W.float(), (b.detach() - W @ mu).float()


def f1_score(pred: Tensor, true: Tensor) -> tuple[float, float, float]:
    """(F1, precision, recall) of boolean predictions; 0 where undefined (no positives)."""
    pred, true = pred.bool(), true.bool()
    tp = int((pred & true).sum())
    fp = int((pred & ~true).sum())
    fn = int((~pred & true).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return f1, prec, rec


@dataclass
class LetterProbes:
    W_CD: Float[Tensor, "26 d"]
    b_C: Float[Tensor, " 26"]
    f1_C: list[float]
    precision_C: list[float]
    recall_C: list[float]

    def unit(self, letter: int) -> Float[Tensor, " d"]:
        w = self.W_CD[letter].double()
        return (w / w.norm().clamp_min(torch.finfo(torch.float64).tiny)).float()


def fit_letter_probes(data: FirstLetterData, l2: float = 1e-3) -> LetterProbes:
    """The 26 one-vs-rest probes on the train split, with per-letter F1 on the test split."""
    tr, te = data.train_N, ~data.train_N
    Y = torch.nn.functional.one_hot(data.letter_N, len(LETTERS)).double()
    W, b = fit_logistic(data.acts_ND[tr], Y[tr], l2=l2)
    logits = data.acts_ND[te] @ W.T + b
    stats = [f1_score(logits[:, c] > 0, data.letter_N[te] == c) for c in range(len(LETTERS))]
    return LetterProbes(W, b, [s[0] for s in stats], [s[1] for s in stats], [s[2] for s in stats])


# (model, hook, task, l2) -> probes: one fit per job, shared by every letter asked for.
_CACHE: dict[tuple, tuple[Any, LetterProbes]] = {}


def letter_probes(model, hook: str, task: FirstLetterTask, l2: float) -> LetterProbes:
    key = (id(model), hook, task, l2)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is model:
        return hit[1]
    probes = fit_letter_probes(first_letter_data(model, hook, task), l2)
    _CACHE.clear()  # keep one model's probes alive at most
    _CACHE[key] = (model, probes)
    return probes
