"""``probe``: the unit weight row of a first-letter linear probe, METHODS §6 [C24].

The probes are those of the first-letter task (:mod:`sensdir.tasks.first_letter`: words of the
vocabulary, in-context prompts, activations at the word position at the site's hook, 26
one-vs-rest logistic probes). The direction of letter ``L`` is ``W[L] / ||W[L]||``: the same
unit vector for every base activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig, bounded
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.errors import ConfigError
from sensdir.sae_ops import like_base
from sensdir.tasks.first_letter import LETTERS, FirstLetterTask, letter_probes
from sensdir.walk_types import DirectionContext, Proposal


@dataclass(frozen=True)
class ProbeConfig(DirectionConfig):
    name: str = "probe"
    letter: str = "A"
    n_icl_examples: int = bounded(4, ge=0)
    separator: str | None = None
    min_word_len: int = 1  # SAEBench keeps single letters too
    max_words: int | None = None
    train_frac: float = bounded(0.8, gt=0, lt=1)
    l2: float = bounded(1e-3, ge=0)
    seed: int = 0

    def label(self) -> str:
        return f"probe:{self.letter}"

    def __post_init__(self) -> None:
        if self.letter not in LETTERS:
            raise ConfigError(f"probe: letter={self.letter!r} is not valid; valid choices: {', '.join(LETTERS)}")

    def task(self) -> FirstLetterTask:
        return FirstLetterTask.from_config(self)


@DIRECTIONS.register("probe", ProbeConfig)
class Probe(Direction):
    needs_sae = False
    """The same unit direction ``W[letter] / ||W[letter]||`` for every base."""

    info_columns = {"probe_letter": "string", "probe_f1": "float64"}

    returns = "direction"
    cfg: ProbeConfig

    def __init__(self, cfg: ProbeConfig, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        model, site = getattr(ctx, "model", None), getattr(ctx, "site", None)
        if model is None or site is None:
            raise ConfigError(
                "probe: the direction context has no model/site (DirectionContext.model and .site are needed to fit the probe)"
            )
        hook = site if isinstance(site, str) else site.hook
        li = LETTERS.index(cfg.letter)
        probes = letter_probes(model, hook, cfg.task(), cfg.l2)
        self.u_D = probes.unit(li)
        self.f1 = probes.f1_C[li]

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        B = base_BD.shape[0]
        u_BD = self.u_D[None, :].expand(B, -1).clone()
        return Proposal(
            unit_BD=like_base(u_BD, base_BD, self.ctx.device),
            info={"probe_letter": [self.cfg.letter] * B, "probe_f1": torch.full((B,), self.f1)},
        )
