"""``plateau`` [GP24], [HM24]: start from another activation X patched into the base's
context and walk toward a fresh R ~ N(mu, Sigma).

X is the target of the direction type named by ``start`` (``real``: another prompt's
activation; ``synth_struct`` / ``synth_baseline``: a synthetic activation built from the
base's SAE code; ``random``: a sample of N(mu, Sigma); any type that returns targets). How
long the output stays flat on the way from X (the plateau length, METHODS §4) tells how
"real-like" X is; use it with ``schedule=absolute``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.walk_types import DirectionContext, Proposal


@dataclass(frozen=True)
class PlateauConfig(DirectionConfig):
    name: str = "plateau"
    start: str = "real"

    def label(self) -> str:
        return f"plateau:{self.start}"


@DIRECTIONS.register("plateau", PlateauConfig)
class Plateau(Direction):
    returns = "target"

    @classmethod
    def declared_columns(cls) -> dict[str, str]:
        """``start_<fact>`` for every fact of every type that can be a start, and the norms."""
        out = {"start_norm": "float64", "target_norm": "float64"}
        for e in DIRECTIONS.entries():
            if e.impl.returns == "target" and e.impl is not cls:
                out.update({f"start_{k}": v for k, v in e.impl.declared_columns().items()})
        return out

    @classmethod
    def uses_sae(cls, cfg: DirectionConfig) -> bool:
        try:
            start = DIRECTIONS.get(getattr(cfg, "start", "real"))
        except KeyError:
            return True  # an unknown start is reported by the constructor's own check
        return start.impl.uses_sae(start.config_cls())

    def __init__(self, cfg: PlateauConfig, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        starts = [e.name for e in DIRECTIONS.entries() if e.impl.returns == "target" and e.name != "plateau"]
        if cfg.start not in starts:
            raise ValueError(
                f"direction.start={cfg.start!r} is not a direction type with targets; valid choices: {', '.join(starts)}"
            )
        entry = DIRECTIONS.get(cfg.start)
        self.start = entry.impl(entry.config_cls(), ctx)

    def propose(self, base_BD, base_index_B, gen: torch.Generator) -> Proposal:
        start = self.start.propose(base_BD, base_index_B, gen)
        assert start.target_BD is not None  # start types are checked to return targets
        target_BD = self.ctx.stats.sample_gaussian(base_BD.shape[0], gen).to(device=base_BD.device, dtype=base_BD.dtype)
        info = {f"start_{k}": v for k, v in start.info.items()}
        info["start_norm"] = start.target_BD.norm(dim=-1).cpu()
        info["target_norm"] = target_BD.norm(dim=-1).cpu()
        return Proposal(target_BD=target_BD, start_BD=start.target_BD, info=info)
