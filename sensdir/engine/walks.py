"""The walk engine: every metric's curve at every step of every walk, by one of four paths.

The path is chosen here and only here, for both site modes, and recorded in the manifest:

- ``lean`` (last position): the clean prefix's keys and values computed once per prompt and
  shared by every step of its walks; fused QKV and in-place residual updates
  (``sensdir.engine.lean``).
- ``kv_cache`` (last position): the same through transformer_lens's blocks and KV-cache
  entries, for layouts the lean path does not cover (``sensdir.engine.kv_cache``).
- ``full``: every step reruns the whole sequence from the site; the only path for
  ``site.positions=all``, where every position is perturbed [LH24].

``auto`` takes the first that applies. All agree with ``sensdir.engine.reference``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from sensdir.engine.forward import blocks_from_site, logit_rows
from sensdir.engine.kv_cache import prefix_kv, run_last_from_site
from sensdir.engine.lean import LeanPath, unsupported_reason
from sensdir.errors import ConfigError
from sensdir.metrics.base import Metric, Readout
from sensdir.site import Site

PATHS = ("auto", "lean", "kv_cache", "full")
POSITIONS = ("last", "all")


def choose_path(requested: str, model_cfg: Any, positions: str) -> str:
    """The path that will run, or ``ConfigError`` naming why the requested one cannot."""
    if requested not in PATHS:
        raise ConfigError(f"engine.path={requested!r} is unknown; valid choices: {', '.join(PATHS)}")
    if positions not in POSITIONS:
        raise ConfigError(f"site.positions={positions!r} is not supported; valid choices: {', '.join(POSITIONS)}")
    if positions == "all":
        if requested not in ("auto", "full"):
            raise ConfigError(f"site.positions=all perturbs every position and runs engine.path=full, not {requested!r}")
        return "full"
    reason = unsupported_reason(model_cfg)
    if requested == "auto":
        return "lean" if reason is None else "kv_cache"
    if requested == "lean" and reason is not None:
        raise ConfigError(f"engine.path=lean does not support this model: {reason}")
    return requested


def _row_chunks(B: int, per_row: int, budget: int) -> Iterator[slice]:
    rows = max(1, budget // per_row)
    for start in range(0, B, rows):
        yield slice(start, min(B, start + rows))


class WalkEngine:
    """Computes the curves of ``metrics`` for walks that perturb the site."""

    def __init__(
        self,
        model,
        site: Site,
        metrics: Sequence[Metric],
        *,
        positions: str = "last",
        path: str = "auto",
        batch_size: int = 4096,
        logits_mb: float = 512.0,
        compile: bool = False,
        walks_per_pass: int | None = None,
    ):
        self.model, self.site, self.metrics, self.positions = model, site, list(metrics), positions
        self.path = choose_path(path, model.cfg, positions)
        self.batch_size, self.compile, self.walks_per_pass = batch_size, compile, walks_per_pass
        self.lean = LeanPath(model, site.start_layer) if self.path == "lean" else None
        workspace = self.lean.workspace if self.lean is not None else None
        self.readout = Readout(model, logit_rows(model, logits_mb), workspace, compile)

    def record(self) -> dict[str, Any]:
        """What ran, for the manifest."""
        p = next(self.model.parameters())
        return {
            "path": self.path,
            "positions": self.positions,
            "compile": self.compile,
            "walks_per_pass": self.walks_per_pass,
            "dtype": str(p.dtype).removeprefix("torch."),
            "device": str(p.device),
        }

    @torch.inference_mode()
    def curves(self, clean_bTD: Float[Tensor, "b T d"], acts_BKD: Float[Tensor, "B K d"], progress=None) -> dict[str, Tensor]:
        """Each metric's [B, K] curve, relative to each walk's step 0.

        Site mode ``last``: B = b, one walk per prompt. Site mode ``all``: B = b * T, one walk per
        (prompt, position), and each row is the mean over the prompt's positions but the last
        (METHODS §4, as [G24]; (choice) every metric, L2 included, averages the same positions),
        so B = b rows come back.
        """
        if self.positions == "all":
            b, T, D = clean_bTD.shape
            return self._all_positions(acts_BKD.reshape(b, T, acts_BKD.shape[1], D).to(clean_bTD.dtype), progress)
        return self._last_position(clean_bTD, acts_BKD, progress)

    def _empty(self, B: int, K: int, device) -> dict[str, Tensor]:
        return {m.name: torch.empty(B, K, dtype=torch.float32, device=device) for m in self.metrics}

    def _last_position(self, clean_BTD: Tensor, acts_BKD: Tensor, progress) -> dict[str, Tensor]:
        # Whole walks go into one forward pass, so step 0's readout comes from the same batch as
        # the others and every curve starts at exactly 0. With walks_per_pass set, every pass
        # has that many walks (the last of a block fewer), whatever batch_size is: a walk's
        # numbers then do not depend on the batch size (matrix products round differently for
        # different shapes, ~1e-6, enough to move a max-slope step between near-equal rises).
        B, K, D = acts_BKD.shape
        out = self._empty(B, K, acts_BKD.device)
        per_pass = self.walks_per_pass or max(1, self.batch_size // K)
        for start in range(0, B, per_pass):
            rows = slice(start, min(B, start + per_pass))
            final_nKD = self._final(clean_BTD[rows], acts_BKD[rows].to(clean_BTD.dtype))
            for m in self.metrics:
                out[m.name][rows] = m.curve(final_nKD, self.readout)
            if progress is not None:
                progress.update(rows.stop - rows.start)
        return out

    def _final(self, clean_nTD: Tensor, acts_nKD: Tensor) -> Tensor:
        """Final residual at the last position of every step of n walks, by this engine's path."""
        n, K, D = acts_nKD.shape
        T = clean_nTD.shape[1]
        if self.lean is not None:
            return self.lean.run(acts_nKD, self.lean.prefix(clean_nTD))
        if self.path == "kv_cache":
            prompt_N = torch.arange(n, device=acts_nKD.device).repeat_interleave(K)
            prefix = prefix_kv(self.model, clean_nTD, self.site)
            return run_last_from_site(self.model, acts_nKD.reshape(n * K, D), prefix, prompt_N, self.site).reshape(n, K, D)
        resid_NTD = clean_nTD[:, None, :, :].expand(n, K, T, D).reshape(n * K, T, D).clone()
        resid_NTD[:, -1, :] = acts_nKD.reshape(n * K, D)
        return blocks_from_site(self.model, resid_NTD, self.site)[:, -1, :].reshape(n, K, D)

    def _all_positions(self, acts_BTKD: Float[Tensor, "B T K d"], progress) -> dict[str, Tensor]:
        B, T, K, D = acts_BTKD.shape
        if T < 2:
            raise ValueError("site.positions=all needs prompts of at least 2 tokens (the last position is excluded)")
        out = self._empty(B, K, acts_BTKD.device)
        for rows in _row_chunks(B, K * T, self.batch_size):
            n = rows.stop - rows.start
            resid_NTD = acts_BTKD[rows].permute(0, 2, 1, 3).reshape(n * K, T, D).contiguous()
            final_nKPD = blocks_from_site(self.model, resid_NTD, self.site)[:, :-1, :].reshape(n, K, T - 1, D)
            walks_wKD = final_nKPD.permute(0, 2, 1, 3).reshape(n * (T - 1), K, D)  # one walk per (prompt, position)
            for m in self.metrics:
                # [n, K, positions] contiguous, averaged along its last axis (the summation order
                # of the reference computation, so results match it to the bit)
                out[m.name][rows] = m.curve(walks_wKD, self.readout).reshape(n, T - 1, K).transpose(1, 2).contiguous().mean(-1)
            if progress is not None:
                progress.update(n)
        return out
