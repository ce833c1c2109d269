"""``ioi_supervised``: supervised (mean-code) dictionaries for IOI against the SAE, METHODS §7
[M24] (Makelov, Lange, Nanda 2024).

Prompts: IOI sentences in patterns ABB (``io_pos=0``) and BAB (``io_pos=1``) with attributes
``io``, ``s``, ``io_pos`` (:mod:`sensdir.tasks.ioi`): on the embedded model from the
generator it was trained on, on GPT-2 small from the templates written for it. They are split
by unordered name pair into train (dictionary, SAE latent choice) and test (every score).

Site: ``site.hook`` (by default the SAE's hook), last position (END, where IO is predicted).
``a`` is the clean activation there; every intervention replaces only that vector.

Scores on the test prompts (LD = logit(IO) - logit(S) at END, names scored by their first token):

* ``ld=<method>``: the mean LD with ``a`` replaced by: ``clean`` (a itself), ``mean_ablation``
  (u0), ``supervised`` (``u0 + sum_attr u_{attr,v(p)}``), ``sae`` (``SAE(a)``); column
  ``ld_recovered = |LD_x - LD_meanabl| / |LD_clean - LD_meanabl|`` of the mean LDs, and
  ``fvu``, the replacement's fraction of variance unexplained over the test activations
  (sum ||a - a_x||^2 / sum ||a - mean(a)||^2).
* ``edit=<attr>/<method>``: each test prompt p gets a counterfactual p' with ``attr`` changed
  to another value v' (another name, different from both of p's names; or the other pattern),
  the rest of the sentence kept. Methods that replace ``a``: ``clean`` (nothing: the floor),
  ``patch`` (the activation of p' itself: the best any edit at this site can do),
  ``supervised`` (``a - u_{attr,v} + u_{attr,v'}``), ``sae`` (below). Columns:
  ``agree_cf`` fraction of prompts whose edited top-1 token equals the top-1 token of the
  counterfactual prompt p' run clean; ``agree_cf_names`` the same with the argmax taken over
  the names of p and p' only; ``agree_patch`` top-1 agreement with the ``patch`` run;
  ``kl_cf`` mean KL(p' run || edited run) over the vocabulary. Changing ``s`` or ``io_pos``
  does not change the IO, so for them the counterfactual prompt predicts what p does and
  ``clean`` already agrees: read those rows against ``clean`` and ``patch``.
* SAE edits: for every value v, the ``sae_k`` latents with the best F1 of "latent active" as a
  classifier of "attr = v" on the train prompts; an edit v -> v' sets v's latents to 0 and v''s
  latents to their mean activation over train prompts with v', and adds the change of the
  decoder output to ``a`` (``a + dec(f') - dec(f)``: the SAE error is kept).
* ``f1=<attr>:<value>``: the best latent for that value, its F1, precision, recall, the
  number of train prompts with the value (``n``) and ``f1_trivial`` = 2p/(1+p), the F1 of a
  latent active everywhere (p = the value's base rate; 0.67 for ``io_pos``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from sensdir.config import bounded
from sensdir.sae_ops import sae_decode, sae_encode
from sensdir.studies.base import STUDIES, Study, StudyConfig
from sensdir.studies.ioi_supervised_report import METHODS_EDIT, summarize_tables
from sensdir.tasks.ioi import (
    ATTRIBUTES,
    attribute_value,
    attribute_values,
    counterfactual,
    ioi_source,
    other_value,
    pair_split,
    resolve_source,
    sample_prompts,
)
from sensdir.tasks.ioi_dictionary import MeanCodeDictionary, PromptRuns, latent_f1, ld_recovered, name_token

METHODS_LD = ("clean", "mean_ablation", "supervised", "sae")
COLUMNS = (
    "row_key",
    "kind",
    "attribute",
    "value",
    "method",
    "sae",
    "hook",
    "ld",
    "ld_recovered",
    "fvu",
    "agree_cf",
    "agree_cf_names",
    "agree_patch",
    "kl_cf",
    "latent",
    "latents",
    "f1",
    "f1_trivial",
    "precision",
    "recall",
    "n",
)


@dataclass(frozen=True)
class IoiSupervisedConfig(StudyConfig):
    name: str = "ioi_supervised"
    prompts: str = "auto"  # embedded | gpt2 | auto (gpt2 for GPT-2 models, else embedded)
    templates: tuple[int, ...] = ()  # template indices; () = the embedded training templates / all GPT-2 ones
    custom_templates: tuple[str, ...] = ()  # replace the templates ({A} {B} {S} {place} {object})
    names: tuple[str, ...] = ()  # replace the source's names
    attributes: tuple[str, ...] = ATTRIBUTES  # those the dictionary has (and that are edited)
    n_prompts: int = bounded(3000, ge=2)  # IOI prompts, train + test
    test_frac: float = bounded(0.2, gt=0, lt=1)  # fraction of name pairs held out for scoring
    n_edit: int = bounded(0, ge=0)  # test prompts edited per attribute (0 = all)
    sae_k: int = bounded(1, ge=1)  # latents per value in SAE edits
    prepend_bos: bool = True
    batch: int = bounded(256, ge=1)


def _f1_trivial(p: float) -> float:
    """F1 of a latent active on every prompt, for a value of base rate p: 2p / (1 + p)."""
    return 2 * p / (1 + p)


def _add(out: dict[str, list], **kw) -> None:
    for c in COLUMNS:
        out[c].append(kw.get(c))


def _kl(p_logits, q_logits):
    lp, lq = p_logits.float().log_softmax(-1), q_logits.float().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)


@STUDIES.register("ioi_supervised", IoiSupervisedConfig)
class IoiSupervised(Study):
    cfg: IoiSupervisedConfig
    summary_section = "ioi_supervised"

    def __init__(self, cfg: IoiSupervisedConfig, ctx):
        super().__init__(cfg, ctx)
        bad = [a for a in cfg.attributes if a not in ATTRIBUTES]
        if bad or not cfg.attributes:
            raise ValueError(f"study.attributes {list(cfg.attributes)} must be a non-empty subset of {', '.join(ATTRIBUTES)}")
        if cfg.n_prompts < 10 or not 0 < cfg.test_frac < 1 or cfg.sae_k < 1 or cfg.batch < 1 or cfg.n_edit < 0:
            raise ValueError(
                "study.n_prompts >= 10, 0 < study.test_frac < 1, study.sae_k >= 1, study.batch >= 1 and study.n_edit >= 0 are required"
            )
        self.src = ioi_source(resolve_source(cfg.prompts, ctx.model), cfg.templates, cfg.custom_templates, cfg.names)

    def planned_keys(self) -> list[str]:
        keys = [f"ld={m}" for m in METHODS_LD]
        keys += [f"edit={a}/{m}" for a in self.cfg.attributes for m in METHODS_EDIT]
        keys += [f"f1={a}:{v}" for a in self.cfg.attributes for v in attribute_values(self.src, a)]
        return keys

    def _runs(self, examples) -> PromptRuns:
        return PromptRuns(self.ctx.model, self.ctx.site, [e.prompt for e in examples], self.cfg.batch, self.cfg.prepend_bos)

    @torch.inference_mode()
    def run(self) -> dict[str, list]:
        ctx, cfg, src = self.ctx, self.cfg, self.src
        exs = sample_prompts(src, cfg.n_prompts, ctx.seed)
        tr_idx, te_idx = pair_split(exs, cfg.test_frac, ctx.seed)
        if not tr_idx or not te_idx:
            raise ValueError("the train/test split by name pair left one side empty; raise study.n_prompts")
        train, test = [exs[i] for i in tr_idx], [exs[i] for i in te_idx]

        # the dictionary and the SAE latents per attribute value, from the train prompts
        a_tr = self._runs(train).site_last()
        lab_tr = {a: [attribute_value(e, a) for e in train] for a in cfg.attributes}
        dic = MeanCodeDictionary.fit(a_tr, lab_tr)
        best = self._best_latents(a_tr, lab_tr)

        test_runs = self._runs(test)
        clean = test_runs.logits()  # (logits, site activations) of the unedited test prompts
        lab_te = {a: [attribute_value(e, a) for e in test] for a in cfg.attributes}
        missing = {(a, v) for a in cfg.attributes for v in lab_te[a] if v not in dic.codes[a]}
        if missing:
            raise ValueError(f"no train prompt has {sorted(missing)[:3]}...; raise study.n_prompts")
        out: dict[str, list] = {c: [] for c in COLUMNS}
        common = dict(sae=ctx.cfg.sae.path or f"{ctx.cfg.sae.release}/{ctx.cfg.sae.sae_id}", hook=ctx.site.hook)
        self._ld_rows(out, common, test, test_runs, clean, dic, lab_te)
        for a in cfg.attributes:
            self._edit_rows(out, common, a, test, test_runs, clean, dic, lab_te[a], best)
        for a in cfg.attributes:
            for v in attribute_values(src, a):
                b = best[(a, v)]
                _add(
                    out,
                    row_key=f"f1={a}:{v}",
                    kind="f1",
                    attribute=a,
                    value=v,
                    method="sae",
                    latent=int(b["latents"][0]),
                    latents=[int(x) for x in b["latents"]],
                    f1=b["f1"],
                    f1_trivial=b["f1_trivial"],
                    precision=b["precision"],
                    recall=b["recall"],
                    n=b["n"],
                    **common,
                )
        return out

    def _best_latents(self, a_tr: Tensor, lab_tr: dict[str, list[str]]) -> dict[tuple[str, str], dict]:
        """Per attribute value, the ``sae_k`` latents whose activity best classifies it (F1)."""
        cfg, sae = self.cfg, self.ctx.sae
        f_tr = torch.cat([sae_encode(sae, a_tr[i : i + cfg.batch]) for i in range(0, len(a_tr), cfg.batch)]).float()
        active = f_tr > 0
        best: dict[tuple[str, str], dict] = {}
        for a in cfg.attributes:
            for v in attribute_values(self.src, a):
                pos = torch.tensor([x == v for x in lab_tr[a]], device=f_tr.device)
                f1, prec, rec = latent_f1(active, pos)
                top = torch.topk(f1, min(cfg.sae_k, f1.numel())).indices
                mean_act = f_tr[pos][:, top].mean(0) if pos.any() else torch.zeros(len(top), device=f_tr.device)
                best[(a, v)] = {
                    "latents": top,
                    "mean": mean_act,
                    "f1": float(f1[top[0]]),
                    "precision": float(prec[top[0]]),
                    "recall": float(rec[top[0]]),
                    "n": int(pos.sum()),
                    "f1_trivial": _f1_trivial(float(pos.float().mean())),
                }
        return best

    def _ld_rows(self, out, common, test, test_runs: PromptRuns, clean, dic: MeanCodeDictionary, lab_te) -> None:
        """The ``ld=<method>`` rows: mean logit difference, LD recovered and FVU per replacement."""
        cfg, sae, model = self.cfg, self.ctx.sae, self.ctx.model
        io_tok = torch.tensor([name_token(model, e.io)[0] for e in test])
        s_tok = torch.tensor([name_token(model, e.s)[0] for e in test])
        clean_logits, a_te = clean
        rows_idx = torch.arange(len(test))

        def mean_ld(logits):
            lg = logits.float().cpu()
            return float((lg[rows_idx, io_tok] - lg[rows_idx, s_tok]).mean())

        repl = {
            "mean_ablation": dic.u0_D.expand(len(test), -1),
            "supervised": dic.reconstruct(lab_te),
            "sae": torch.cat([sae_decode(sae, sae_encode(sae, a_te[i : i + cfg.batch])) for i in range(0, len(a_te), cfg.batch)]),
        }
        ld = {"clean": mean_ld(clean_logits)}
        for m, r in repl.items():
            ld[m] = mean_ld(test_runs.logits(r)[0])
        # fraction of variance unexplained by each replacement, over the test activations
        a64 = a_te.double()
        var = float(((a64 - a64.mean(0)) ** 2).sum())
        fvu = {m: float(((a64 - r.double().to(a64.device)) ** 2).sum()) / var for m, r in repl.items()}
        fvu["clean"] = 0.0
        for m in METHODS_LD:
            _add(
                out,
                row_key=f"ld={m}",
                kind="ld",
                method=m,
                ld=ld[m],
                n=len(test),
                fvu=fvu[m],
                ld_recovered=ld_recovered(ld[m], ld["clean"], ld["mean_ablation"]),
                **common,
            )

    def _edit_rows(self, out, common, a: str, test, test_runs: PromptRuns, clean, dic: MeanCodeDictionary, src_all, best) -> None:
        """The ``edit=<a>/<method>`` rows: each test prompt's attribute ``a`` edited to another
        value, scored against its counterfactual prompt (module docstring)."""
        cfg, src, model = self.cfg, self.src, self.ctx.model
        n_edit = len(test) if cfg.n_edit == 0 else min(cfg.n_edit, len(test))
        sub = list(range(n_edit))
        rng = random.Random(f"ioi-edit:{self.ctx.seed}:{a}")
        src_vals = [src_all[i] for i in sub]
        # the new value is drawn among those the train prompts gave a code to
        draw_src = src if a == "io_pos" else replace(src, names=tuple(n for n in src.names if n in dic.codes[a]))
        to_vals = [other_value(draw_src, test[i], a, rng) for i in sub]
        cfs = [counterfactual(src, test[i], a, v) for i, v in zip(sub, to_vals)]
        cf_logits, a_cf = self._runs(cfs).logits()
        base_runs = test_runs if n_edit == len(test) else self._runs(test[:n_edit])
        clean_logits, a_te = clean
        a0 = a_te[:n_edit]
        edited = {
            "patch": a_cf,
            "supervised": dic.edit(a0, a, src_vals, to_vals),
            "sae": self._sae_edit(a0, [best[(a, v)] for v in src_vals], [best[(a, w)] for w in to_vals]),
        }
        logits = {"clean": clean_logits[:n_edit]}
        for m, r in edited.items():
            logits[m] = base_runs.logits(r)[0]
        # candidate names: those of p and p'
        cand = [sorted({name_token(model, n)[0] for n in (test[i].io, test[i].s, c.io, c.s)}) for i, c in zip(sub, cfs)]
        top_cf = cf_logits.argmax(-1).cpu()
        top_patch = logits["patch"].argmax(-1).cpu()

        def name_argmax(lg):
            lg = lg.float().cpu()
            return torch.tensor([c[int(lg[i, c].argmax())] for i, c in enumerate(cand)])

        cf_names = name_argmax(cf_logits)
        for m in METHODS_EDIT:
            lg = logits[m]
            top = lg.argmax(-1).cpu()
            _add(
                out,
                row_key=f"edit={a}/{m}",
                kind="edit",
                attribute=a,
                method=m,
                n=n_edit,
                agree_cf=float((top == top_cf).float().mean()),
                agree_cf_names=float((name_argmax(lg) == cf_names).float().mean()),
                agree_patch=float((top == top_patch).float().mean()),
                kl_cf=float(_kl(cf_logits, lg).mean()),
                **common,
            )

    def _sae_edit(self, a0: Tensor, best_from: list[dict], best_to: list[dict]) -> Tensor:
        """``a + dec(f') - dec(f)``: each row's source-value latents set to 0 and its new value's
        latents to their mean train activation (the SAE error is kept)."""
        sae, batch, n = self.ctx.sae, self.cfg.batch, a0.shape[0]
        f = torch.cat([sae_encode(sae, a0[i : i + batch]) for i in range(0, n, batch)]).float()
        f_new = f.clone()
        for i, (bv, bw) in enumerate(zip(best_from, best_to)):
            f_new[i, bv["latents"]] = 0
            f_new[i, bw["latents"]] = bw["mean"]
        dec = lambda z: torch.cat([sae_decode(sae, z[i : i + batch]) for i in range(0, n, batch)]).float()  # noqa: E731
        return (a0.float() + (dec(f_new) - dec(f)).to(a0.device)).to(a0.dtype)

    @classmethod
    def summarize(cls, tables, out_dir: Path):
        return summarize_tables(tables, out_dir)
