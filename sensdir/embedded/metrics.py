"""Evaluation of the embedded model (needs only torch and numpy).

Definitions (used for ``metrics.json`` and the model card):

* **held-out prose loss** -- the held-out token stream (each document preceded by end-of-text)
  is cut into consecutive windows of ``n_ctx`` input tokens; every token is predicted once, with
  the preceding tokens of its window as context.  Targets that are the end-of-text token are not
  scored.  ``nats_per_token`` is the mean cross-entropy over scored targets; ``bits_per_char`` is
  the summed cross-entropy in bits divided by the number of characters of the held-out documents.
* **accuracy** of a task -- the fraction of prompts (end-of-text + prompt, no answer) for which
  the correct answer token is the argmax of the next-token logits.  For IOI also the mean logit
  difference (IO minus S) and the fraction where the IO logit beats the S logit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def prose_loss(
    logits_fn: LogitsFn, stream: np.ndarray, n_chars: int, n_ctx: int, device: str | torch.device = "cpu", batch_size: int = 64
) -> dict:
    toks = torch.as_tensor(stream.astype(np.int64))
    n_win = (len(toks) - 1) // n_ctx
    total_nats, count = 0.0, 0
    rest_start = n_win * n_ctx
    windows = [(i * n_ctx, n_ctx) for i in range(n_win)]
    if len(toks) - 1 - rest_start > 0:
        windows.append((rest_start, len(toks) - 1 - rest_start))
    for j in range(0, len(windows), batch_size):
        chunk = windows[j : j + batch_size]
        for length in sorted({w[1] for w in chunk}):
            starts = [s for s, L in chunk if L == length]
            idx = torch.tensor(starts)[:, None] + torch.arange(length + 1)[None]
            batch = toks[idx].to(device)
            logits = logits_fn(batch[:, :-1]).float()
            tgt = batch[:, 1:]
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
            keep = tgt.reshape(-1) != 0
            total_nats += nll[keep].double().sum().item()
            count += int(keep.sum().item())
    return {
        "nats_per_token": total_nats / count,
        "bits_per_char": total_nats / math.log(2) / n_chars,
        "tokens": count,
        "characters": n_chars,
    }


@torch.no_grad()
def task_accuracy(logits_fn: LogitsFn, items: list[dict], device: str | torch.device = "cpu", batch_size: int = 128) -> dict:
    correct = 0
    beats = 0
    diffs: list[float] = []
    has_wrong = bool(items) and "wrong" in items[0]
    for j in range(0, len(items), batch_size):
        chunk = items[j : j + batch_size]
        lens = [len(it["tokens"]) for it in chunk]
        T = max(lens)
        batch = torch.zeros(len(chunk), T, dtype=torch.long)
        for r, it in enumerate(chunk):
            batch[r, : len(it["tokens"])] = torch.tensor(it["tokens"])
        logits = logits_fn(batch.to(device)).float()
        last = logits[torch.arange(len(chunk)), torch.tensor(lens) - 1].cpu()
        ans = torch.tensor([it["answer"] for it in chunk])
        correct += int((last.argmax(-1) == ans).sum())
        if has_wrong:
            wrong = torch.tensor([it["wrong"] for it in chunk])
            d = last.gather(1, ans[:, None])[:, 0] - last.gather(1, wrong[:, None])[:, 0]
            diffs.extend(d.tolist())
            beats += int((d > 0).sum())
    out = {"accuracy": correct / max(len(items), 1), "n": len(items)}
    if has_wrong:
        out["io_beats_s"] = beats / max(len(items), 1)
        out["logit_diff_mean"] = float(np.mean(diffs)) if diffs else float("nan")
    return out


TASKS = ("ioi_train", "ioi_heldout_pairs", "ioi_heldout_templates", "first_letter_seen", "first_letter_unseen")


def evaluate_all(
    logits_fn: LogitsFn,
    eval_json: dict,
    prose_heldout: np.ndarray | None,
    n_ctx: int,
    device: str | torch.device = "cpu",
    tasks: tuple[str, ...] = TASKS,
    prose: bool = True,
) -> dict:
    out: dict = {}
    if prose and prose_heldout is not None:
        out["prose_heldout"] = prose_loss(logits_fn, prose_heldout, eval_json["prose_heldout_characters"], n_ctx, device)
    for key in tasks:
        out[key] = task_accuracy(logits_fn, eval_json[key], device)
    return out
