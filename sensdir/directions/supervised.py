"""``supervised``: the edit vector of a supervised (mean-code) dictionary, METHODS §7 [M24].

A mean-code dictionary (:mod:`sensdir.tasks.ioi_dictionary`) is fitted on IOI prompts
(:mod:`sensdir.tasks.ioi`) at the site's hook, at the last position (END, where the IO name is
predicted): ``u0 = E[a]``, ``u_{attr,v} = E[a - u0 | attr = v]`` for attr in io, s, io_pos.

The direction type returns a ``"scaled_direction"``: the unit vector of
``u_{attr,to} - u_{attr,from}`` with natural length its norm, so that ``schedule=relative``
walks from A exactly to the edited activation ``A + u_{attr,to} - u_{attr,from}``, and
``lengths``/``absolute`` walk along it to their own lengths. ``from_value``/``to_value``
empty: a pair of distinct values is drawn per base prompt from the job's generator. The same
vector is applied whatever the base prompt is (the walks' bases are not IOI prompts).

Needs the model and the site (``DirectionContext.model`` / ``.site``) to fit the dictionary;
the fit (``n_prompts`` IOI prompts, a few seconds on the embedded model) happens when the
direction is built, before any walk.

info: ``from_value``, ``to_value``, ``edit_norm`` (= the natural length).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig, bounded
from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.tasks.ioi import ATTRIBUTES, attribute_values, ioi_source, resolve_source
from sensdir.tasks.ioi_dictionary import fit_ioi_dictionary
from sensdir.walk_types import Proposal


@dataclass(frozen=True)
class SupervisedConfig(DirectionConfig):
    name: str = "supervised"
    attribute: str = "io"  # io | s | io_pos
    from_value: str = ""  # e.g. "Mary" or "0" (io_pos); "" = drawn per base prompt
    to_value: str = ""  # "" = drawn per base prompt, different from from_value
    prompts: str = "auto"  # IOI sentences: embedded | gpt2 | auto (gpt2 for GPT-2 models)
    templates: tuple[int, ...] = ()  # template indices of that source; () = its default set
    custom_templates: tuple[str, ...] = ()  # replace the templates ({A} {B} {S} {place} {object})
    names: tuple[str, ...] = ()  # replace the source's names
    n_prompts: int = bounded(1000, ge=2)  # IOI prompts the dictionary is fitted on
    prompt_seed: int = 0
    prepend_bos: bool = True

    def label(self) -> str:
        return f"supervised:{self.attribute}"


@DIRECTIONS.register("supervised", SupervisedConfig)
class Supervised(Direction):
    info_columns = {"from_value": "string", "to_value": "string", "edit_norm": "float64"}
    cfg: SupervisedConfig
    returns = "scaled_direction"

    def __init__(self, cfg: SupervisedConfig, ctx):
        super().__init__(cfg, ctx)
        if cfg.attribute not in ATTRIBUTES:
            raise ValueError(f"supervised: attribute={cfg.attribute!r} is not valid; valid choices: {', '.join(ATTRIBUTES)}")
        model, site = getattr(ctx, "model", None), getattr(ctx, "site", None)
        if model is None or site is None:
            raise ValueError(
                "supervised: the direction context has no model/site to fit the dictionary on "
                "(DirectionContext.model and .site must be set)"
            )
        if cfg.n_prompts < 2:
            raise ValueError("supervised: n_prompts must be at least 2")
        src = ioi_source(resolve_source(cfg.prompts, model), cfg.templates, cfg.custom_templates, cfg.names)
        values = attribute_values(src, cfg.attribute)
        for f in ("from_value", "to_value"):
            v = getattr(cfg, f)
            if v and v not in values:
                raise ValueError(f"supervised: {f}={v!r} is not a value of {cfg.attribute}; valid: {', '.join(values)}")
        if cfg.from_value and cfg.from_value == cfg.to_value:
            raise ValueError("supervised: from_value and to_value are the same (the edit would be zero)")
        self.dictionary = fit_ioi_dictionary(
            model, site, src, cfg.n_prompts, cfg.prompt_seed, (cfg.attribute,), prepend_bos=cfg.prepend_bos
        )
        self.values = sorted(self.dictionary.codes[cfg.attribute])
        for v in (cfg.from_value, cfg.to_value):
            if v and v not in self.values:
                raise ValueError(f"supervised: no fitting prompt has {cfg.attribute}={v!r}; raise n_prompts")
        if len(self.values) < 2:
            raise ValueError(f"supervised: the fitting prompts show fewer than 2 values of {cfg.attribute}")

    def _pairs(self, B: int, gen: torch.Generator) -> tuple[list[str], list[str]]:
        cfg, vals = self.cfg, self.values
        froms, tos = [], []
        for _ in range(B):
            f = cfg.from_value or vals[int(torch.randint(len(vals), (1,), generator=gen))]
            if cfg.to_value:
                t = cfg.to_value
                if not cfg.from_value and f == t:  # draw the source among the other values
                    others = [v for v in vals if v != t]
                    f = others[int(torch.randint(len(others), (1,), generator=gen))]
            else:
                others = [v for v in vals if v != f]
                t = others[int(torch.randint(len(others), (1,), generator=gen))]
            froms.append(f)
            tos.append(t)
        return froms, tos

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        froms, tos = self._pairs(base_BD.shape[0], gen)
        d_BD = torch.stack([self.dictionary.edit_vector(self.cfg.attribute, f, t) for f, t in zip(froms, tos)])
        norm_B = d_BD.norm(dim=-1)
        unit_BD = d_BD / norm_B.clamp_min(1e-30)[:, None]
        dev = self.ctx.device
        return Proposal(
            unit_BD=unit_BD.to(device=dev, dtype=base_BD.dtype),
            natural_length_B=norm_B.to(device=dev, dtype=base_BD.dtype),
            info={"from_value": froms, "to_value": tos, "edit_norm": norm_B.float().cpu()},
        )
