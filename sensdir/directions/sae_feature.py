"""``sae_feature``: an SAE decoder direction, METHODS §3 [LH24].

``u = W_dec[j] / ||W_dec[j]||`` with ``j`` drawn per base, uniformly, from the group set by
``group`` (``direction.group=...``):

- ``active``: latents with ``f_j(A) > 0`` for this base (``f = SAE.encode(A)``);
- ``alive``: latents that fire in the stats data (``~ctx.stats.dead_S``) but not on this base
  (``f_j(A) == 0``);
- ``dead``: latents that never fire in the stats data (``ctx.stats.dead_S``), whatever they do
  on this base (a dead latent that fires here shows a nonzero ``latent_act``).

Latents whose decoder row is zero have no direction and are never drawn. Returns unit
directions (``"direction"``): walk them with ``schedule=lengths`` [LH24] or ``absolute``.

Drawing: one ``torch.rand`` value ``r`` per base from the CPU generator (always ``B`` draws,
whatever the groups hold), ``j = group[floor(r * n)]`` with the group's ``n`` latents in
increasing index order.

info: ``latent`` (``j``), ``latent_freq`` (its firing frequency in the stats data),
``latent_act`` (``f_j(A)``; 0 when ``j`` is not active on this base), ``base_l0``.

**An empty group** (choice):

- a group that is empty for every base is refused when the type is built (``ConfigError``,
  before any walk): ``dead`` when the SAE has no dead latent in the stats data, ``alive``
  when every latent is dead;
- a group empty for one base only (``active`` for a base with no active latent, ``alive`` for a
  base on which every live latent fires) cannot drop the row (every base has a row), so that
  row gets ``latent = -1``, ``u = 0`` (its walk stays at ``A``: KL 0 at every length), and
  ``latent_freq = latent_act = NaN``; a warning counts such rows. Analyses should filter
  ``latent >= 0``. The random draw for that base is still consumed, so the other rows do not
  change.

A ``group`` not in ``active, alive, dead`` fails when the config is built (Hydra composition,
``ConfigError`` naming the valid choices) and again when the type is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig
from sensdir.directions.base import DIRECTIONS, Direction, check_choice
from sensdir.errors import ConfigError
from sensdir.sae_ops import l0, like_base, normalise_rows, sae_encode
from sensdir.walk_types import DirectionContext, Proposal

log = logging.getLogger("sensdir")

GROUPS = ("active", "alive", "dead")


@dataclass(frozen=True)
class SaeFeatureConfig(DirectionConfig):
    name: str = "sae_feature"
    group: str = "active"  # "active" | "alive" | "dead"

    def label(self) -> str:
        return f"sae_feature:{self.group}"

    def __post_init__(self) -> None:
        check_choice("sae_feature", "group", self.group, GROUPS)


@DIRECTIONS.register("sae_feature", SaeFeatureConfig)
class SaeFeature(Direction):
    returns = "direction"
    info_columns = {"latent": "int64", "latent_freq": "float64", "latent_act": "float64", "base_l0": "int64"}
    cfg: SaeFeatureConfig

    def __init__(self, cfg: SaeFeatureConfig, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        check_choice("sae_feature", "group", cfg.group, GROUPS)
        with torch.no_grad():
            has_dir_S = (ctx.sae.W_dec.detach().norm(dim=-1) > 0).cpu()
        self.freq_S = ctx.stats.firing_freq_S.detach().float().cpu()
        self.dead_S = ctx.stats.dead_S.detach().cpu()
        if cfg.group == "dead":
            self.eligible_S = has_dir_S & self.dead_S
        elif cfg.group == "alive":
            self.eligible_S = has_dir_S & ~self.dead_S
        else:
            self.eligible_S = has_dir_S
        if not self.eligible_S.any():
            what = {
                "dead": "no dead latent (every latent fires in the stats data)",
                "alive": "no live latent (no latent fires in the stats data)",
                "active": "no latent with a nonzero decoder row",
            }[cfg.group]
            raise ConfigError(f"sae_feature: group={cfg.group!r} is empty for every base: the SAE has {what}")
        self._dead_idx = torch.nonzero(self.eligible_S).squeeze(1)  # the fixed group of "dead"

    def choose(self, f_BS: Float[Tensor, "B d_sae"], gen: torch.Generator) -> Int[Tensor, " B"]:
        """The latent ``j`` of each base (``-1`` where its group is empty), see the module docstring."""
        active_BS = f_BS.detach().cpu() > 0
        r_B = torch.rand(f_BS.shape[0], generator=gen, dtype=torch.float64)
        j_B = torch.full((f_BS.shape[0],), -1, dtype=torch.long)
        for b in range(f_BS.shape[0]):
            if self.cfg.group == "dead":
                idx = self._dead_idx
            elif self.cfg.group == "alive":
                idx = torch.nonzero(self.eligible_S & ~active_BS[b]).squeeze(1)
            else:
                idx = torch.nonzero(self.eligible_S & active_BS[b]).squeeze(1)
            n = idx.numel()
            if n:
                j_B[b] = idx[min(int(float(r_B[b]) * n), n - 1)]
        return j_B

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        f_BS = sae_encode(self.ctx.sae, base_BD)
        j_B = self.choose(f_BS, gen)
        ok_B = j_B >= 0
        w_SD = self.ctx.sae.W_dec.detach()
        with torch.no_grad():
            rows_BD = w_SD[j_B.clamp(min=0).to(w_SD.device)].double()
        u_BD, _ = normalise_rows(rows_BD)
        u_BD[~ok_B.to(u_BD.device)] = 0.0
        f_cpu_BS = f_BS.detach().float().cpu()
        jj_B = j_B.clamp(min=0)
        act_B = f_cpu_BS.gather(1, jj_B[:, None]).squeeze(1).clamp(min=0)
        nan = torch.tensor(float("nan"))
        info = {
            "latent": j_B,
            "latent_freq": torch.where(ok_B, self.freq_S[jj_B], nan),
            "latent_act": torch.where(ok_B, act_B, nan),
            "base_l0": l0(f_BS),
        }
        n_empty = int((~ok_B).sum())
        if n_empty:
            log.warning(
                "sae_feature: %d of %d bases have no %s latent; their rows have latent=-1 and u=0",
                n_empty,
                len(j_B),
                self.cfg.group,
            )
        return Proposal(unit_BD=like_base(u_BD, base_BD, self.ctx.device), info=info)
