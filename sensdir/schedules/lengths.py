"""``lengths`` [LH24]: A' = A + L u for each length L of a list, METHODS §2.

Lists (``preset``):

- ``default``: the odd numbers 1..19, then 20..48 by 4, then 51..91 by 10
  (``DEFAULT_LENGTHS``, 23 lengths);
- ``short``: 0.1..2.9 by 0.1 (``SHORT_LENGTHS``, 29 lengths);
- ``lengths=[...]`` gives any list instead (positive, strictly increasing); it wins over
  ``preset``.

Step 0 is the unperturbed activation (METHODS §2: "Step 0 is always the unperturbed
activation"), so the schedule prepends ``L = 0``: the walk has ``1 + len(list)`` steps and its
grid is ``[0, *list]`` (``grid_kind = "length"``). ``n_steps`` is derived from the list, not
set: the config's ``n_steps`` is 0 by default, meaning "derived", and any other value must
equal ``1 + len(list)`` (else a ``ConfigError``), so a stale ``schedule.n_steps=100`` cannot
silently disagree with the list.

Proposals: a unit direction ``u`` (``"direction"``), also one with a natural length
(``"scaled_direction"``: walked along ``u`` to the list's lengths, the natural length is not
used), or a target ``T`` (``u = (T - A) / ||T - A||``, ``u = 0`` for ``T = A``). Every step is
valid: unlike ``absolute``, lengths beyond ``||T - A||`` are kept (the list is the grid).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from sensdir.config import ScheduleConfig
from sensdir.errors import ConfigError
from sensdir.schedules.base import SCHEDULES, Schedule
from sensdir.walk_types import Proposal, Walk

#: [LH24] default list: odd 1..19, 20..48 step 4, 51..91 step 10 (METHODS §2).
DEFAULT_LENGTHS: tuple[float, ...] = (
    1.0,
    3.0,
    5.0,
    7.0,
    9.0,
    11.0,
    13.0,
    15.0,
    17.0,
    19.0,
    20.0,
    24.0,
    28.0,
    32.0,
    36.0,
    40.0,
    44.0,
    48.0,
    51.0,
    61.0,
    71.0,
    81.0,
    91.0,
)
#: short list: 0.1..2.9 by 0.1 (METHODS §2); k / 10 is the float nearest to each decimal.
SHORT_LENGTHS: tuple[float, ...] = tuple(k / 10 for k in range(1, 30))
PRESETS: dict[str, tuple[float, ...]] = {"default": DEFAULT_LENGTHS, "short": SHORT_LENGTHS}


def resolve_lengths(preset: str, lengths) -> tuple[float, ...]:
    """The list of lengths a config asks for (without the prepended 0), checked."""
    if lengths is None:
        if preset not in PRESETS:
            raise ConfigError(f"schedule.preset={preset!r} is not valid; valid choices: {', '.join(PRESETS)}")
        return PRESETS[preset]
    out = tuple(float(x) for x in lengths)
    if not out:
        raise ConfigError("schedule.lengths is empty; give at least one length, or lengths=null for the preset")
    if not all(x > 0 and x != float("inf") for x in out):
        raise ConfigError(f"schedule.lengths must be positive and finite (step 0, L = 0, is added), got {list(out)}")
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ConfigError(f"schedule.lengths must be strictly increasing, got {list(out)}")
    return out


@dataclass(frozen=True)
class LengthsConfig(ScheduleConfig):
    name: str = "lengths"
    n_steps: int = 0  # 0 = derived, 1 + len(list); any other value must equal that
    preset: str = "default"  # "default" | "short"
    lengths: tuple[float, ...] | None = None  # an explicit list; overrides preset

    def __post_init__(self) -> None:
        if self.lengths is not None and not isinstance(self.lengths, tuple):
            object.__setattr__(self, "lengths", tuple(self.lengths))  # OmegaConf gives a list
        check_lengths_config(self)


def check_lengths_config(cfg: LengthsConfig) -> tuple[float, ...]:
    lengths = resolve_lengths(cfg.preset, cfg.lengths)
    if cfg.n_steps not in (0, 1 + len(lengths)):
        raise ConfigError(
            f"schedule.n_steps={cfg.n_steps} disagrees with the {len(lengths)} lengths "
            f"(1 + {len(lengths)} = {1 + len(lengths)} steps, step 0 being the clean run); "
            "leave n_steps at 0 (derived from the list)"
        )
    return lengths


@SCHEDULES.register("lengths", LengthsConfig)
class Lengths(Schedule):
    accepts = ("target", "direction", "scaled_direction")
    grid_kind = "length"

    def __init__(self, cfg: LengthsConfig):
        self.lengths = check_lengths_config(cfg)
        super().__init__(replace(cfg, n_steps=1 + len(self.lengths)))

    def grid(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """``[0, *lengths]``: the distance from ``A`` of every step."""
        return torch.tensor((0.0, *self.lengths), dtype=torch.float64).to(device=device, dtype=dtype)

    def walk_from(self, base_BD: torch.Tensor, proposal: Proposal) -> Walk:
        B = base_BD.shape[0]
        if proposal.target_BD is not None:
            delta_BD = proposal.target_BD - base_BD
            norm_B = delta_BD.norm(dim=-1)
            unit_BD = delta_BD / norm_B.clamp_min(torch.finfo(base_BD.dtype).tiny)[:, None]
        else:
            unit_BD = proposal.unit_BD
        unit_BD = unit_BD.to(device=base_BD.device, dtype=base_BD.dtype)
        len_K = self.grid(base_BD.dtype, base_BD.device)
        acts_BKD = base_BD[:, None, :] + len_K[None, :, None] * unit_BD[:, None, :]
        grid_BK = len_K.expand(B, -1)
        return Walk(acts_BKD, grid_BK, torch.ones_like(grid_BK, dtype=torch.bool))
