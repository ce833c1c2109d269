"""Supervised (mean-code) dictionaries of IOI prompts, METHODS §7 [M24]: the dictionary, the
logit-difference-recovered score, latent F1, and batched runs of IOI prompts through the model.

Shared by the ``supervised`` direction type and the ``ioi_supervised`` study, so it lives
outside both. The dictionary of activations ``a`` at the last position (END)::

    u0          = E[a]                       (over the fitting prompts)
    u_{attr,v}  = E[a - u0 | attr = v]       for attr in io, s, io_pos

The reconstruction of a prompt p is ``u0 + sum_attr u_{attr, v(p)}`` and the edit of attribute
``attr`` from ``v`` to ``v'`` is ``a - u_{attr,v} + u_{attr,v'}``, i.e. adding
``u_{attr,v'} - u_{attr,v}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from sensdir.engine.forward import clean_site_resid
from sensdir.engine.reference import run_from_site
from sensdir.tasks.ioi import ATTRIBUTES, IOISource, attribute_value, sample_prompts

# ---------------------------------------------------------------------------------------------
# The dictionary and the scores (pure tensor code, tested on hand-built activations)


@dataclass
class MeanCodeDictionary:
    """``u0`` and ``codes[attr][value] = u_{attr,value}`` (METHODS §7)."""

    u0_D: Float[Tensor, " d"]
    codes: dict[str, dict[str, Float[Tensor, " d"]]]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def fit(cls, acts_ND: Float[Tensor, "N d"], labels: Mapping[str, Sequence[str]]) -> MeanCodeDictionary:
        """Mean codes from activations ``acts_ND`` and one value per row for each attribute
        (computed in float64; a value with no row gets no code)."""
        a = acts_ND.double()
        u0 = a.mean(0)
        centred = a - u0
        codes: dict = {}
        counts: dict = {}
        for attr, vals in labels.items():
            if len(vals) != len(a):
                raise ValueError(f"attribute {attr!r} has {len(vals)} labels for {len(a)} activations")
            codes[attr], counts[attr] = {}, {}
            groups: dict[str, list[int]] = {}
            for i, v in enumerate(vals):
                groups.setdefault(str(v), []).append(i)
            for v, idx in sorted(groups.items()):
                codes[attr][v] = centred[idx].mean(0)
                counts[attr][v] = len(idx)
        return cls(u0, codes, counts)

    def code(self, attr: str, value: str) -> Tensor:
        try:
            return self.codes[attr][str(value)]
        except KeyError:
            raise ValueError(f"the dictionary has no code for {attr}={value!r} (no fitting prompt had it)") from None

    def reconstruct(self, labels: Mapping[str, Sequence[str]]) -> Float[Tensor, "N d"]:
        """``u0 + sum_attr u_{attr, v(p)}`` per row (float64)."""
        n = len(next(iter(labels.values())))
        out = self.u0_D.expand(n, -1).clone()
        for attr, vals in labels.items():
            out += torch.stack([self.code(attr, v) for v in vals])
        return out

    def edit_vector(self, attr: str, from_value: str, to_value: str) -> Float[Tensor, " d"]:
        """``u_{attr,to} - u_{attr,from}``: what an edit adds to the activation."""
        return self.code(attr, to_value) - self.code(attr, from_value)

    def edit(self, acts_ND: Tensor, attr: str, from_values: Sequence[str], to_values: Sequence[str]) -> Tensor:
        """``a - u_{attr,v} + u_{attr,v'}`` per row, in ``acts_ND``'s dtype."""
        delta = torch.stack([self.edit_vector(attr, v, w) for v, w in zip(from_values, to_values)])
        return (acts_ND.double() + delta.to(acts_ND.device)).to(acts_ND.dtype)


def ld_recovered(ld_recon: float, ld_clean: float, ld_ablate: float) -> float:
    """``|LD_recon - LD_meanabl| / |LD_clean - LD_meanabl|`` (METHODS §7); NaN when clean and
    ablated logit differences coincide."""
    den = abs(ld_clean - ld_ablate)
    return abs(ld_recon - ld_ablate) / den if den > 0 else float("nan")


def latent_f1(active_NS: torch.Tensor, positive_N: torch.Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(F1, precision, recall) per latent of "latent active" as a classifier of
    ``positive_N`` (bool). F1 = 2 TP / (#active + #positive); 0 where undefined."""
    act = active_NS.float()
    pos = positive_N.float()
    tp = pos @ act
    n_act = act.sum(0)
    n_pos = pos.sum()
    f1 = torch.where(n_act + n_pos > 0, 2 * tp / (n_act + n_pos).clamp_min(1e-12), torch.zeros_like(tp))
    precision = torch.where(n_act > 0, tp / n_act.clamp_min(1e-12), torch.zeros_like(tp))
    recall = tp / n_pos if n_pos > 0 else torch.zeros_like(tp)
    return f1, precision, recall


# ---------------------------------------------------------------------------------------------
# IOI prompts through the model


def name_token(model, name: str) -> tuple[int, int]:
    """(first token id of " name", number of tokens of " name")."""
    ids = model.tokenizer(" " + name, add_special_tokens=False)["input_ids"]
    return int(ids[0]), len(ids)


class PromptRuns:
    """The prompts' site activations and logits at the last position, computed in groups of
    equal token length (no padding, so the last position is the last token of every prompt)."""

    def __init__(self, model, site, prompts: Sequence[str], batch: int = 256, prepend_bos: bool = True):
        self.model, self.site, self.batch = model, site, batch
        tok = model.tokenizer
        ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
        if prepend_bos:
            ids = [[tok.bos_token_id, *x] for x in ids]
        too_long = max(len(x) for x in ids)
        if too_long > model.cfg.n_ctx:
            raise ValueError(f"an IOI prompt has {too_long} tokens, more than the model's n_ctx={model.cfg.n_ctx}")
        self.groups: dict[int, list[int]] = {}
        for i, x in enumerate(ids):
            self.groups.setdefault(len(x), []).append(i)
        self.ids = ids
        self.n = len(ids)
        self._resid: dict[int, Tensor] = {}  # chunk number -> clean site residual (filled by logits)

    def _chunks(self):
        dev = self.model.cfg.device
        for _length, idx in sorted(self.groups.items()):
            for s in range(0, len(idx), self.batch):
                sub = idx[s : s + self.batch]
                yield sub, torch.tensor([self.ids[i] for i in sub], device=dev)

    @torch.inference_mode()
    def site_last(self) -> Float[Tensor, "N d"]:
        """Clean activation at the site, last position."""
        out = None
        for sub, toks in self._chunks():
            a = clean_site_resid(self.model, toks, self.site)[:, -1, :]
            if out is None:
                out = torch.empty(self.n, a.shape[-1], dtype=a.dtype, device=a.device)
            out[sub] = a
        assert out is not None, "no prompts"
        return out

    @torch.inference_mode()
    def logits(self, replace_ND: Tensor | None = None) -> tuple[Float[Tensor, "N V"], Float[Tensor, "N d"]]:
        """Last-position logits with the site's last position replaced by ``replace_ND`` (None:
        clean), and the clean site activations at the last position. The clean residual at the
        site is computed on the first call and kept for the next ones."""
        logits: Tensor | None = None
        acts: Tensor | None = None
        for c, (sub, toks) in enumerate(self._chunks()):
            # the clean residual up to the site is kept: every later call only runs the blocks
            # from the site on
            if c not in self._resid:
                self._resid[c] = clean_site_resid(self.model, toks, self.site)
            resid = self._resid[c]
            a = resid[:, -1, :].clone()
            if replace_ND is not None:
                resid = resid.clone()
                resid[:, -1, :] = replace_ND[sub].to(device=resid.device, dtype=resid.dtype)
            lg, _ = run_from_site(self.model, resid, self.site)
            if logits is None:
                logits = torch.empty(self.n, lg.shape[-1], dtype=lg.dtype, device=lg.device)
                acts = torch.empty(self.n, a.shape[-1], dtype=a.dtype, device=a.device)
            assert logits is not None and acts is not None
            logits[sub], acts[sub] = lg, a
        assert logits is not None and acts is not None, "no prompts"
        return logits, acts


def fit_ioi_dictionary(
    model,
    site,
    src: IOISource,
    n_prompts: int,
    seed: int,
    attributes: Sequence[str] = ATTRIBUTES,
    batch: int = 256,
    prepend_bos: bool = True,
) -> MeanCodeDictionary:
    """The mean-code dictionary of ``n_prompts`` IOI prompts at the site's last position."""
    exs = sample_prompts(src, n_prompts, seed)
    acts = PromptRuns(model, site, [e.prompt for e in exs], batch, prepend_bos).site_last()
    return MeanCodeDictionary.fit(acts, {a: [attribute_value(e, a) for e in exs] for a in attributes})
