"""Where a walk perturbs the model: a residual-stream hook and the blocks that read it.

The one place that turns a hook name into a layer; the engine, the direction types that fit
something on the model, the studies and the SAE trainer all ask here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RESID_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
_ANY_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


class SiteError(ValueError):
    pass


def layer_of_hook(hook: str) -> int:
    """The block number of any ``blocks.<L>.…`` hook (``ValueError`` for other names)."""
    m = _ANY_BLOCK_HOOK.match(hook)
    if m is None:
        raise SiteError(f"cannot read a layer from hook {hook!r} (expected blocks.<layer>.<hook name>)")
    return int(m.group(1))


def final_hook(n_layers: int) -> str:
    return f"blocks.{n_layers - 1}.hook_resid_post"


@dataclass(frozen=True)
class Site:
    hook: str
    layer: int
    start_layer: int  # first block that reads the (perturbed) residual stream

    @classmethod
    def parse(cls, hook: str, n_layers: int) -> Site:
        m = _RESID_HOOK.match(hook)
        if m is None:
            raise SiteError(
                f"site hook {hook!r} is not a residual-stream hook; use blocks.<layer>.hook_resid_pre "
                f"or blocks.<layer>.hook_resid_post with layer in 0..{n_layers - 1}"
            )
        layer = int(m.group(1))
        if not 0 <= layer < n_layers:
            raise SiteError(f"site hook {hook!r}: layer {layer} is outside the model's layers 0..{n_layers - 1}")
        return cls(hook, layer, layer if m.group(2) == "pre" else layer + 1)
