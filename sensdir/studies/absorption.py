"""``absorption``: feature absorption on the first-letter task, METHODS §6 ([C24] Chanin et al.,
"A is for Absorption"; the projection-based metrics of SAEBench's absorption eval).

Data and probes: :mod:`sensdir.tasks.first_letter` (alphabetic vocabulary tokens, seeded 80/20 split
of words, in-context prompts, activations at the word position at the SAE's own hook, 26
class-balanced L2-regularised one-vs-rest logistic probes, per-letter F1 on the test split).

k-sparse probing (main latents of a letter). On the train split the SAE latents ``f`` (below) are ranked
by the difference of their mean activation on the letter's words and on the other words
(descending). For k = 1 .. ``k_max`` a logistic regression (class-balanced, L2 ``probe_l2``) on
the top-k latents' activations is fitted on the train split and its F1 (logit > 0) measured on
the test split. k = 1 is always taken; k + 1 is taken while its F1 exceeds the F1 of the last
taken k by more than ``k_sparse_f1_gain`` (0.03, [C24]/SAEBench); the first k that does not
stops the search. The top-k latents of the last taken k are the letter's *main latents*.
(choice) SAEBench ranks the latents by the weights of an L1-regularised probe on all latents;
the mean-difference ranking here is the k-sparse probing of Gurnee et al. that [C24] cite.

Absorption, per test word ``w`` of letter ``L`` that the letter's probe detects (probe logit >
0: the probe's true positives, SAEBench's denominator). With ``x`` the word's activation, ``p``
the unit probe direction of ``L``, ``f_j = SAE.encode(x)_j * ||W_dec[j]||`` (the latents of
the same SAE with its decoder norms folded into the encoder, which reconstructs identically:
SAEBench's definitions assume unit decoder rows, and several of ours, L1-trained, do not have
them), ``cos_j = cos(W_dec[j], p)`` and the latent's projection ``c_j = f_j * cos_j`` (= the
latent's actual contribution ``SAE.encode(x)_j * W_dec[j] . p`` to ``x . p``):

* ``P = x . p`` (the activation's projection on the probe; no bias, not centred);
* ``M = sum_{j in main} c_j``;
* candidates: ``j`` not main with ``cos_j >= candidate_cos_min`` (0.1) and ``c_j > 0``; ``A`` =
  the sum of the ``max_absorbing`` (3) largest candidate ``c_j``;
* **absorption fraction**: 0 if ``P <= 0``, or ``M >= P``, or ``A / P < absorption_proj_share``
  (0.4); else 1 if ``M <= 0``; else ``a / (a + M)`` with ``a = min(A, P - M)``, clipped to [0, 1];
* **full absorption** (a single absorbing latent): every main latent has ``f_j < 1e-8``, the
  latent ``t`` with the largest ``c_t`` (over all latents) has ``cos_t >=
  probe_cos_threshold`` (0.025), ``P > 0``, and ``c_t / P >= absorption_proj_share`` (0.4).

(choice) ``P <= 0`` gives fraction 0 and no full absorption; SAEBench gives the same for
``P < 0`` and divides by zero at ``P = 0``.

Per letter: ``mean_absorption_fraction`` = the mean fraction over its probe true positives,
``full_absorption_rate`` = the share of them with full absorption (NaN with none). Per SAE
(``summarize``), statistic ``mean``: the mean of each over the letters whose probe F1 >
``f1_threshold`` (0.6, SAEBench's ``min_GT_probe_f1``), reported only where at least
``min_letters`` (20, SAEBench's ``min_feats_for_eval``) letters pass, as SAEBench refuses to
score otherwise; ``mean_ungated`` drops that count gate and ``mean_any_f1`` also the F1 filter
(every letter with probe true positives): diagnostics for models whose probes do not
generalise to held-out words. ``l0`` is the SAE's mean L0 at the word positions of all the
task's prompts.

One row per letter (``row_key`` ``letter=A`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from sensdir.config import bounded
from sensdir.sae_ops import sae_encode
from sensdir.studies.absorption_report import summarize_tables
from sensdir.studies.base import STUDIES, Study, StudyConfig
from sensdir.tasks.first_letter import (
    LETTERS,
    FirstLetterData,
    FirstLetterTask,
    LetterProbes,
    f1_score,
    first_letter_data,
    fit_letter_probes,
    fit_logistic,
)

EPS = 1e-8  # a latent "fires" when its activation is at least this (SAEBench)
COLUMNS = (
    "row_key",
    "letter",
    "sae",
    "architecture",
    "hook",
    "d_sae",
    "l0",
    "n_words",
    "n_train",
    "n_test",
    "probe_f1",
    "probe_precision",
    "probe_recall",
    "probe_ok",
    "k",
    "main_latents",
    "main_latents_cos",
    "k_sparse_f1",
    "n_probe_tp",
    "mean_absorption_fraction",
    "full_absorption_rate",
    "n_full_absorption",
)


@dataclass(frozen=True)
class AbsorptionConfig(StudyConfig):
    name: str = "absorption"
    # the first-letter task (sensdir.tasks.first_letter)
    n_icl_examples: int = 4
    separator: str | None = None  # None: the BOS / end-of-text token; "\n" for GPT-2 (SAEBench)
    min_word_len: int = 1  # SAEBench keeps single letters too
    max_words: int | None = None
    train_frac: float = bounded(0.8, gt=0, lt=1)
    probe_l2: float = bounded(1e-3, ge=0)
    # k-sparse probing
    k_max: int = bounded(10, ge=1)
    k_sparse_f1_gain: float = 0.03
    # absorption (SAEBench's thresholds)
    f1_threshold: float = bounded(0.6, ge=0, le=1)
    min_letters: int = 20  # SAEBench's min_feats_for_eval: fewer letters above f1_threshold -> no score
    candidate_cos_min: float = bounded(0.1, ge=-1, le=1)
    probe_cos_threshold: float = bounded(0.025, ge=-1, le=1)
    absorption_proj_share: float = bounded(0.4, ge=0, le=1)
    max_absorbing: int = 3
    batch: int = bounded(256, ge=1)

    def task(self, seed: int) -> FirstLetterTask:
        return FirstLetterTask.from_config(self, seed=seed)


@dataclass(frozen=True)
class AbsorptionThresholds:
    candidate_cos_min: float = 0.1
    probe_cos_threshold: float = 0.025
    proj_share: float = 0.4
    max_absorbing: int = 3


def absorption_scores(
    x_ND: Float[Tensor, "N d"],
    f_NS: Float[Tensor, "N S"],
    u_ND: Float[Tensor, "N d"],
    cos_NS: Float[Tensor, "N S"],
    main_NS: Bool[Tensor, "N S"],
    th: AbsorptionThresholds = AbsorptionThresholds(),
) -> tuple[Float[Tensor, " N"], Bool[Tensor, " N"]]:
    """Absorption fraction and full absorption of each row (module docstring), float64.

    ``x``: activations; ``f``: their SAE latents; ``u``: the unit probe direction of each row's
    letter; ``cos``: cos(W_dec[j], u) per row; ``main``: the row letter's main latents."""
    x, f, u, cos = (t.detach().double().cpu() for t in (x_ND, f_NS, u_ND, cos_NS))
    main = main_NS.detach().bool().cpu()
    P = (x * u).sum(-1)
    c = f * cos
    M = torch.where(main, c, torch.zeros_like(c)).sum(-1)
    cand = ~main & (cos >= th.candidate_cos_min) & (c > 0)
    cvals = torch.where(cand, c, torch.zeros_like(c))
    k = min(th.max_absorbing, c.shape[1])
    A = cvals.topk(k, dim=-1).values.sum(-1) if k > 0 else torch.zeros_like(P)
    pos = P > 0
    Psafe = torch.where(pos, P, torch.ones_like(P))
    zero = ~pos | (M >= P) | (A / Psafe < th.proj_share)
    a = torch.minimum(A, P - M)
    partial = (a / (a + M).clamp_min(torch.finfo(torch.float64).tiny)).clamp(0.0, 1.0)
    frac = torch.where(zero, torch.zeros_like(P), torch.where(M <= 0, torch.ones_like(P), partial))

    silent = torch.where(main, f < EPS, torch.ones_like(main)).all(-1)
    top = c.argmax(-1)
    c_top = c.gather(1, top[:, None]).squeeze(1)
    cos_top = cos.gather(1, top[:, None]).squeeze(1)
    full = silent & (cos_top >= th.probe_cos_threshold) & pos & (c_top / Psafe >= th.proj_share)
    return frac, full


def decoder_cos(W_dec_SD: Float[Tensor, "S d"], u_CD: Float[Tensor, "C d"]) -> Float[Tensor, "C S"]:
    """cos(W_dec[j], u_c) for every latent j and direction c (a zero decoder row gives 0)."""
    W = W_dec_SD.detach().double().cpu()
    Wn = W / W.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    u = u_CD.detach().double().cpu()
    un = u / u.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return un @ Wn.T


def choose_main_latents(f1_by_k: list[float], ranked: list[int], gain: float) -> tuple[int, list[int]]:
    """(k, the top-k latents): k = 1, then k + 1 while F1 rises by more than ``gain`` over the
    last taken k."""
    k, best = 1, f1_by_k[0]
    for kk in range(2, len(f1_by_k) + 1):
        if f1_by_k[kk - 1] > best + gain:
            k, best = kk, f1_by_k[kk - 1]
        else:
            break
    return k, ranked[:k]


def k_sparse_f1(f_tr_NK: Float[Tensor, "N K"], y_tr: Tensor, f_te_MK: Float[Tensor, "M K"], y_te: Tensor, l2: float) -> float:
    W, b = fit_logistic(f_tr_NK, y_tr.double()[:, None], l2=l2)
    return f1_score((f_te_MK.double() @ W.double().T + b.double())[:, 0] > 0, y_te)[0]


@STUDIES.register("absorption", AbsorptionConfig)
class Absorption(Study):
    summary_section = "absorption"
    cfg: AbsorptionConfig

    def __init__(self, cfg: AbsorptionConfig, ctx):
        super().__init__(cfg, ctx)
        if cfg.k_max < 1 or cfg.max_absorbing < 0 or cfg.batch < 1:
            raise ValueError("study.k_max and study.batch must be positive and study.max_absorbing >= 0")
        if not 0 < cfg.absorption_proj_share <= 1:
            raise ValueError(f"study.absorption_proj_share must be in (0, 1], got {cfg.absorption_proj_share}")
        cfg.task(ctx.seed).check()

    def planned_keys(self) -> list[str]:
        return [f"letter={L}" for L in LETTERS]

    def _encode(self, x_ND: Tensor) -> Tensor:
        """Latents in the unit-decoder normalisation: f_j * ||W_dec[j]|| (module docstring)."""
        if not hasattr(self, "_dec_norm_S"):
            self._dec_norm_S = self.ctx.sae.W_dec.detach().float().norm(dim=-1).cpu()
        return sae_encode(self.ctx.sae, x_ND).float().cpu() * self._dec_norm_S

    @torch.inference_mode()
    def run(self) -> dict[str, list]:
        ctx, cfg = self.ctx, self.cfg
        data = first_letter_data(ctx.model, ctx.site.hook, cfg.task(ctx.seed))
        probes = fit_letter_probes(data, cfg.probe_l2)
        ranked_CK, l0 = self._rank_latents(data)
        main_CS, per_letter = self._main_latents(data, ranked_CK)
        cos_CS, tp_N, frac_N, full_N = self._absorption(data, probes, main_CS)
        return self._rows(data, probes, l0, per_letter, cos_CS, tp_N, frac_N, full_N)

    def _rank_latents(self, data: FirstLetterData) -> tuple[Tensor, float]:
        """Per letter, the latents ranked by mean activation on its train words minus on the
        other train words (k-sparse probing, module docstring); and the mean L0 on every word."""
        cfg, C, S = self.cfg, len(LETTERS), self.ctx.sae.cfg.d_sae
        X, y, tr = data.acts_ND, data.letter_N, data.train_N
        N = X.shape[0]
        sums_CS = torch.zeros(C, S, dtype=torch.float64)
        l0_sum = 0.0
        for s in range(0, N, cfg.batch):
            f = self._encode(X[s : s + cfg.batch])
            l0_sum += float((f != 0).sum())
            sl = slice(s, s + cfg.batch)
            onehot = torch.nn.functional.one_hot(y[sl], C).double() * tr[sl, None].double()
            sums_CS += onehot.T @ f.double()
        n_tr_C = torch.bincount(y[tr], minlength=C).double()
        total_S = sums_CS.sum(0)
        n_tr = float(tr.sum())
        mean_in = sums_CS / n_tr_C.clamp_min(1)[:, None]
        mean_out = (total_S[None, :] - sums_CS) / (n_tr - n_tr_C).clamp_min(1)[:, None]
        kmax = min(cfg.k_max, S)
        return (mean_in - mean_out).topk(kmax, dim=-1).indices, l0_sum / N

    def _main_latents(self, data: FirstLetterData, ranked_CK: Tensor) -> tuple[Tensor, dict[int, dict]]:
        """Each letter's main latents by k-sparse probing on the ranked latents' activations."""
        cfg, X, y, tr = self.cfg, data.acts_ND, data.letter_N, data.train_N
        te, N, kmax = ~tr, X.shape[0], ranked_CK.shape[1]
        cols = torch.unique(ranked_CK.flatten())
        pos = {int(j): i for i, j in enumerate(cols.tolist())}
        F_cols = torch.cat([self._encode(X[s : s + cfg.batch])[:, cols] for s in range(0, N, cfg.batch)])
        main_CS = torch.zeros(len(LETTERS), self.ctx.sae.cfg.d_sae, dtype=torch.bool)
        per_letter: dict[int, dict] = {}
        for c in range(len(LETTERS)):
            has = bool((y[tr] == c).any()) and bool((y[tr] != c).any())
            ranked = ranked_CK[c].tolist()
            f1s: list[float] = []
            if has:
                for k in range(1, kmax + 1):
                    idx = [pos[j] for j in ranked[:k]]
                    f1s.append(k_sparse_f1(F_cols[tr][:, idx], (y[tr] == c), F_cols[te][:, idx], (y[te] == c), cfg.probe_l2))
                    if k >= 2 and len(f1s) >= 2 and choose_main_latents(f1s, ranked, cfg.k_sparse_f1_gain)[0] < k:
                        break  # the search stopped at k - 1: later k cannot be taken
                k, main = choose_main_latents(f1s, ranked, cfg.k_sparse_f1_gain)
            else:
                k, main = 0, []
            main_CS[c, main] = True
            per_letter[c] = {"k": k, "main": main, "f1s": f1s}
        return main_CS, per_letter

    def _absorption(self, data: FirstLetterData, probes: LetterProbes, main_CS: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(cos_CS, tp_N, frac_N, full_N)``: decoder cosines with each probe direction, the
        probes' true positives on the test split, and absorption on them (NaN / False elsewhere)."""
        cfg, X, y, N = self.cfg, data.acts_ND, data.letter_N, data.acts_ND.shape[0]
        U_CD = torch.stack([probes.unit(c) for c in range(len(LETTERS))])
        cos_CS = decoder_cos(self.ctx.sae.W_dec, U_CD)
        logits = X @ probes.W_CD.T + probes.b_C
        tp = ~data.train_N & (logits.gather(1, y[:, None]).squeeze(1) > 0)
        tp_idx = torch.nonzero(tp).squeeze(1)
        th = AbsorptionThresholds(cfg.candidate_cos_min, cfg.probe_cos_threshold, cfg.absorption_proj_share, cfg.max_absorbing)
        frac_N = torch.full((N,), float("nan"), dtype=torch.float64)
        full_N = torch.zeros(N, dtype=torch.bool)
        for s in range(0, len(tp_idx), cfg.batch):
            rows = tp_idx[s : s + cfg.batch]
            lr = y[rows]
            fr, fu = absorption_scores(X[rows], self._encode(X[rows]), U_CD[lr], cos_CS[lr], main_CS[lr], th)
            frac_N[rows], full_N[rows] = fr, fu
        return cos_CS, tp, frac_N, full_N

    def _rows(self, data, probes, l0, per_letter, cos_CS, tp, frac_N, full_N) -> dict[str, list]:
        sae, sae_cfg = self.ctx.sae, self.ctx.cfg.sae
        y, tr = data.letter_N, data.train_N
        te, N = ~tr, data.acts_ND.shape[0]
        fixed = {
            "sae": sae_cfg.path or f"{sae_cfg.release}/{sae_cfg.sae_id}",
            "architecture": sae.cfg.architecture(),
            "hook": self.ctx.site.hook,
            "d_sae": int(sae.cfg.d_sae),
            "l0": float(l0),
            "n_words": int(N),
        }
        out: dict[str, list] = {k: [] for k in COLUMNS}
        for c, L in enumerate(LETTERS):
            m = tp & (y == c)
            n_tp = int(m.sum())
            pl = per_letter[c]
            row = {
                "row_key": f"letter={L}",
                "letter": L,
                **fixed,
                "n_train": int(((y == c) & tr).sum()),
                "n_test": int(((y == c) & te).sum()),
                "probe_f1": float(probes.f1_C[c]),
                "probe_precision": float(probes.precision_C[c]),
                "probe_recall": float(probes.recall_C[c]),
                "probe_ok": bool(probes.f1_C[c] > self.cfg.f1_threshold),
                "k": int(pl["k"]),
                "main_latents": [int(j) for j in pl["main"]],
                "main_latents_cos": [float(cos_CS[c, j]) for j in pl["main"]],
                "k_sparse_f1": [float(v) for v in pl["f1s"]],
                "n_probe_tp": n_tp,
                "mean_absorption_fraction": float(frac_N[m].mean()) if n_tp else float("nan"),
                "full_absorption_rate": float(full_N[m].double().mean()) if n_tp else float("nan"),
                "n_full_absorption": int(full_N[m].sum()),
            }
            for k in COLUMNS:
                out[k].append(row[k])
        return out

    @classmethod
    def summarize(cls, tables, out_dir):
        return summarize_tables(tables, Path(out_dir))
