"""The ``kv_cache`` path: the last position rerun on the clean prefix's frozen keys and values,
through transformer_lens's own blocks and KV-cache entries (for layouts the lean path does
not cover)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.site import Site


@dataclass
class PrefixKV:
    """Keys and values of the clean prefix (every position but the last) for each block
    from the site on. The last position's perturbation cannot reach them (causal mask), so
    they are computed once per prompt and shared by every step of its walks."""

    keys_L: list[Tensor]  # per block: [B, T-1, heads, d_head]
    values_L: list[Tensor]


@torch.inference_mode()
def prefix_kv(model, clean_BTD: Float[Tensor, "B T d"], site: Site) -> PrefixKV:
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    B = clean_BTD.shape[0]
    resid = clean_BTD[:, :-1, :]
    keys, values = [], []
    for block in model.blocks[site.start_layer :]:
        entry = TransformerLensKeyValueCacheEntry.init_cache_entry(model.cfg, clean_BTD.device, B)
        resid = block(resid, past_kv_cache_entry=entry)
        keys.append(entry.past_keys)
        values.append(entry.past_values)
    return PrefixKV(keys, values)


@torch.inference_mode()
def run_last_from_site(
    model, acts_ND: Float[Tensor, "N d"], prefix: PrefixKV, prompt_N: Int[Tensor, " N"], site: Site
) -> Float[Tensor, "N d"]:
    """Final residual of the last position when only it is recomputed."""
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    resid = acts_ND[:, None, :]
    for i, block in enumerate(model.blocks[site.start_layer :]):
        entry = TransformerLensKeyValueCacheEntry(
            past_keys=prefix.keys_L[i][prompt_N], past_values=prefix.values_L[i][prompt_N], frozen=True
        )
        resid = block(resid, past_kv_cache_entry=entry)
    return resid[:, 0, :]
