"""What a direction type is.

A direction type turns base activations ``A`` into either a *target* ``T`` (the walk goes
toward it) or a *unit direction* ``u`` (the walk goes along it), METHODS §1 and §3.
Randomness comes only from the ``torch.Generator`` passed in, which the job seeds once
from the config: same config and seed, same proposals. What it is given and returns
(``DirectionContext``, ``Proposal``) is in :mod:`sensdir.walk_types`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.errors import ConfigError
from sensdir.registry import Registry
from sensdir.walk_types import DirectionContext, Proposal

DIRECTIONS: Registry[type[Direction]] = Registry("direction", "sensdir.directions")


def check_choice(type_name: str, field: str, value: str, choices: tuple[str, ...]) -> None:
    """``ConfigError`` (a ``ValueError``) naming the valid choices when ``value`` is not one."""
    if value not in choices:
        raise ConfigError(f"{type_name}: {field}={value!r} is not valid; valid choices: {', '.join(choices)}")


@dataclass(frozen=True)
class NormMatchableConfig(DirectionConfig):
    """A target type with an optional norm-matched variant, labelled ``<name>+norm``: each
    target rescaled to the norm of a real activation drawn as ``real`` draws its targets, so
    that a comparison with ``real`` can separate the target's structure from its length."""

    match_norm: bool = False

    def label(self) -> str:
        return f"{self.name}+norm" if self.match_norm else self.name


class Direction(ABC):
    """Base class of direction types. Subclasses register with ``@DIRECTIONS.register``."""

    #: "target" if ``propose`` returns targets, "direction" if it returns unit directions,
    #: "scaled_direction" if unit directions with a natural length each (``natural_length_B``,
    #: e.g. ||SAE(A) - A||), which a relative walk goes along up to that length.
    returns: ClassVar[str] = "target"
    #: How the reduce compares this type with others beyond the KS against ``real``: "error"
    #: (its KL at the natural length is the subject of the error-pathology ratios [G24]),
    #: "error_baseline" (walked to that same length, the ratios' denominators), or None.
    comparison_role: ClassVar[str | None] = None
    #: The facts ``propose`` puts in ``Proposal.info``: column name -> "float64" | "int64" |
    #: "bool" | "string" (docs/shards.md). Every walk shard has the columns of every registered
    #: type (null where another type wrote the shard); an undeclared fact fails the job.
    info_columns: ClassVar[dict[str, str]] = {}
    #: Whether ``propose`` reads the SAE (``ctx.sae``); types that do not run with ``sae.source=none``.
    needs_sae: ClassVar[bool] = True

    def __init__(self, cfg: DirectionConfig, ctx: DirectionContext):
        self.cfg = cfg
        self.ctx = ctx

    @classmethod
    def declared_columns(cls) -> dict[str, str]:
        """This type's fact columns (``info_columns``); a type whose facts depend on other
        types (``plateau``) overrides it."""
        return dict(cls.info_columns)

    @classmethod
    def returns_for(cls, cfg: DirectionConfig) -> str:
        """What ``propose`` returns under ``cfg`` (checked against the schedule at startup)."""
        return cls.returns

    @abstractmethod
    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        """Targets or directions for the base activations ``base_BD``.

        ``base_index_B`` identifies each base prompt (so a type that draws "another" prompt
        can avoid drawing the same one); ``gen`` is a CPU generator.
        """

    def propose_rows(
        self,
        base_BD: Float[Tensor, "B d"],
        base_index_B: Int[Tensor, " B"],
        target_index_B: Int[Tensor, " B"],
        gen: torch.Generator,
    ) -> Proposal:
        """``propose`` for rows that also know their target index (``run.n_targets`` rows per
        base): what the job calls. Types whose rows differ by target index (error_correction's
        pairs and angles, METHODS §11) override it; the others ignore the index."""
        return self.propose(base_BD, base_index_B, gen)

    @classmethod
    def uses_sae(cls, cfg: DirectionConfig) -> bool:
        """Whether this type reads the SAE under ``cfg`` (default: ``needs_sae``)."""
        return cls.needs_sae

    @classmethod
    def check_job(cls, cfg: Any) -> None:
        """Checks of the whole job config (e.g. ``run.n_targets``) at startup, before any model
        is loaded; ``ConfigError`` naming the setting. Default: none."""
        return None


def declared_info_columns() -> dict[str, str]:
    """The fact columns of every registered direction type: what every walk shard carries."""
    out: dict[str, str] = {}
    for entry in DIRECTIONS.entries():
        for name, kind in entry.impl.declared_columns().items():
            if out.setdefault(name, kind) != kind:
                raise ValueError(f"direction fact {name!r} is declared as {out[name]} and as {kind} ({entry.name})")
    return out
