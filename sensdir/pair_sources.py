"""Candidate pairs of directions for the error-correction walks, METHODS §11 [FH26].

A source draws, for one (base, pair) row, two unit directions ``d1``, ``d2`` at the site
(float64, CPU) and an id for each (``-1`` where there is none):

- ``sae``: two distinct SAE decoder rows of latents active on the base (``f_j(A) > 0``);
- ``sae_rare``: ``d1`` an active latent, ``d2`` a latent that co-occurs rarely with it: not
  active on the base, firing in at least ``min_pool_rate`` of the activation-pool prompts, and
  firing together with ``d1`` in at most ``max_cooccur`` of them ((choice) the pool, the "other
  real activations" of the job, is where co-occurrence is counted; 0 = never together there);
- ``probe``: the unit weight rows of two first-letter probes (METHODS §6), among the letters
  whose probe F1 is at least ``min_f1`` ((choice) the two best letters when fewer pass);
- ``contrastive``: mean activation differences over IOI prompt pairs that differ in one
  attribute (``io`` or ``s``): for each of ``n_names`` names ``v``, the mean over ``n_prompts``
  prompts (IO and S other than ``v``) of ``a(prompt with the attribute set to v) - a(prompt)`` at
  the site's last position (END); two distinct names per row;
- ``random``: two isotropic Gaussian directions (control);
- ``pca``: two distinct principal components among the top ``n_pcs`` of the site's activations
  (``Sigma`` of the stats prompts; each component's sign set so that its largest entry is
  positive) (control).

A row whose source has no pair (fewer than two active latents, no rare partner) gets ``None``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sensdir.errors import ConfigError
from sensdir.sae_ops import sae_encode

log = logging.getLogger("sensdir")

SOURCES = ("sae", "sae_rare", "probe", "contrastive", "random", "pca")


@dataclass
class Pair:
    d1_D: Float[Tensor, " d"]
    d2_D: Float[Tensor, " d"]
    id1: int
    id2: int


def _unit(v_D: Tensor) -> Tensor:
    v_D = v_D.detach().double().cpu()
    return v_D / v_D.norm().clamp_min(torch.finfo(torch.float64).tiny)


def _two_distinct(n: int, gen: torch.Generator) -> tuple[int, int]:
    i = int(torch.randint(n, (1,), generator=gen))
    j = (i + 1 + int(torch.randint(n - 1, (1,), generator=gen))) % n
    return i, j


class PairSource(ABC):
    def state(self, base_BD: Tensor) -> Any:
        """Per-batch facts the draws need (the SAE codes of the bases), or None."""
        return None

    @abstractmethod
    def draw(self, state: Any, b: int, gen: torch.Generator) -> Pair | None:
        """The pair of row ``b`` of the batch, drawn from ``gen`` (the row's own generator)."""


class FixedCandidates(PairSource):
    """Two distinct rows of a fixed set of candidate directions (probe, contrastive, pca)."""

    def __init__(self, cands_KD: Tensor, ids: list[int] | None = None):
        if cands_KD.shape[0] < 2:
            raise ConfigError(f"error_correction: need at least 2 candidate directions, got {cands_KD.shape[0]}")
        self.cands_KD = torch.stack([_unit(c) for c in cands_KD])
        self.ids = ids if ids is not None else list(range(cands_KD.shape[0]))

    def draw(self, state: Any, b: int, gen: torch.Generator) -> Pair | None:
        i, j = _two_distinct(len(self.cands_KD), gen)
        return Pair(self.cands_KD[i], self.cands_KD[j], self.ids[i], self.ids[j])


class RandomPairs(PairSource):
    def __init__(self, d: int):
        self.d = d

    def draw(self, state: Any, b: int, gen: torch.Generator) -> Pair | None:
        g_2D = torch.randn(2, self.d, generator=gen, dtype=torch.float64)
        return Pair(_unit(g_2D[0]), _unit(g_2D[1]), -1, -1)


class SaeActivePairs(PairSource):
    def __init__(self, sae):
        self.sae = sae
        with torch.no_grad():
            self.w_SD = sae.W_dec.detach().double().cpu()
        self.has_dir_S = self.w_SD.norm(dim=-1) > 0

    def state(self, base_BD: Tensor) -> Any:
        return (sae_encode(self.sae, base_BD).detach().cpu() > 0) & self.has_dir_S

    def draw(self, state: Any, b: int, gen: torch.Generator) -> Pair | None:
        idx = torch.nonzero(state[b]).squeeze(1)
        if idx.numel() < 2:
            return None
        i, j = _two_distinct(idx.numel(), gen)
        a, c = int(idx[i]), int(idx[j])
        return Pair(_unit(self.w_SD[a]), _unit(self.w_SD[c]), a, c)


class SaeRarePairs(SaeActivePairs):
    def __init__(self, sae, pool_PD: Tensor, firing_freq_S: Tensor, max_cooccur: float, min_pool_rate: float):
        super().__init__(sae)
        self.pool_PS = (sae_encode(sae, pool_PD).detach().cpu() > 0).float()
        self.max_cooccur = max_cooccur
        n = max(1, self.pool_PS.shape[0])
        self.partner_S = self.has_dir_S & (firing_freq_S.detach().cpu() > 0) & (self.pool_PS.sum(0) / n >= min_pool_rate)

    def draw(self, state: Any, b: int, gen: torch.Generator) -> Pair | None:
        idx = torch.nonzero(state[b]).squeeze(1)
        if idx.numel() == 0:
            return None
        a = int(idx[int(torch.randint(idx.numel(), (1,), generator=gen))])
        joint_S = (self.pool_PS[:, a : a + 1] * self.pool_PS).mean(0)
        cand = torch.nonzero(self.partner_S & ~state[b] & (joint_S <= self.max_cooccur)).squeeze(1)
        if cand.numel() == 0:
            return None
        c = int(cand[int(torch.randint(cand.numel(), (1,), generator=gen))])
        return Pair(_unit(self.w_SD[a]), _unit(self.w_SD[c]), a, c)


def pca_candidates(cov_DD: Tensor, n_pcs: int) -> Tensor:
    """The top ``n_pcs`` eigenvectors of ``cov_DD`` (decreasing eigenvalue), each signed so that
    its largest-magnitude entry is positive."""
    _, vecs = torch.linalg.eigh(cov_DD.detach().double().cpu())
    top_KD = vecs[:, torch.arange(vecs.shape[1] - 1, vecs.shape[1] - 1 - min(n_pcs, vecs.shape[1]), -1)].T
    sign_K = torch.sign(top_KD.gather(1, top_KD.abs().argmax(1, keepdim=True))).squeeze(1)
    return top_KD * sign_K[:, None]


def probe_candidates(model, hook: str, min_f1: float, n_icl_examples: int = 4) -> tuple[Tensor, list[int]]:
    """Unit first-letter probe rows of the letters with F1 >= ``min_f1`` (at least the two best),
    and their letter indices (0 = A); the task's other settings are its defaults (METHODS §6)."""
    from sensdir.tasks.first_letter import FirstLetterTask, letter_probes

    probes = letter_probes(model, hook, FirstLetterTask(n_icl_examples=n_icl_examples), 1e-3)
    order = sorted(range(len(probes.f1_C)), key=lambda c: -probes.f1_C[c])
    keep = [c for c in order if probes.f1_C[c] >= min_f1]
    if len(keep) < 2:
        log.warning("error_correction: %d letter probe(s) with F1 >= %.2f; using the two best", len(keep), min_f1)
        keep = order[:2]
    keep.sort()
    return torch.stack([probes.unit(c).double() for c in keep]), keep


def contrastive_candidates(model, site, attribute: str, n_names: int, n_prompts: int, source: str, seed: int) -> Tensor:
    """One mean activation difference per name (see the module docstring), ``[names, d]``."""
    from sensdir.tasks.ioi import counterfactual, ioi_source, resolve_source, sample_prompts
    from sensdir.tasks.ioi_dictionary import PromptRuns

    if attribute not in ("io", "s"):
        raise ConfigError(f"error_correction: contrast_attribute={attribute!r} is not valid; valid choices: io, s")
    src = ioi_source(resolve_source(source, model))
    names = list(dict.fromkeys(src.names))[:n_names]
    pool = sample_prompts(src, 8 * n_prompts + 64, seed)
    before, after, owner = [], [], []
    for k, v in enumerate(names):
        exs = [e for e in pool if v not in (e.io, e.s)][:n_prompts]
        before += [e.prompt for e in exs]
        after += [counterfactual(src, e, attribute, v).prompt for e in exs]
        owner += [k] * len(exs)
    acts = PromptRuns(model, site, before + after).site_last().double().cpu()
    diff_ND = acts[len(before) :] - acts[: len(before)]
    own = torch.tensor(owner)
    return torch.stack([diff_ND[own == k].mean(0) for k in range(len(names))])
