"""A walk job's rows: base prompts × targets, each walked by the schedule and measured by
every metric at every step (METHODS §2-§4)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sensdir.artifacts.identity import row_id
from sensdir.artifacts.schema import build_walk_table, by_position
from sensdir.config import SensdirConfig
from sensdir.data import load_prompts, shard_slice
from sensdir.directions import DIRECTIONS
from sensdir.directions.base import declared_info_columns
from sensdir.engine import WalkEngine, clean_site_resid
from sensdir.errors import ConfigError
from sensdir.job.runner import Loaded
from sensdir.metrics import METRICS, thresholds
from sensdir.schedules.base import Schedule
from sensdir.site import Site, final_hook
from sensdir.stats import compute_stats, site_activations
from sensdir.walk_types import DirectionContext, Walk


def _lists(x_NK: Tensor, valid_NK: Tensor) -> list[list[float | None]]:
    """Rows of a curve, null where the schedule dropped the step."""
    return [[float(v) if ok else None for v, ok in zip(row, vrow)] for row, vrow in zip(x_NK.tolist(), valid_NK.tolist())]


PROPOSAL_CHUNK = 16  # base prompts whose activations and proposals are computed together


@dataclass
class _Proposed:
    clean_bTD: Tensor
    base_norm_b: Tensor
    walk: Walk
    info: dict[str, list]


class WalkTask:
    kind = "walk"

    def __init__(self, cfg: SensdirConfig, loaded: Loaded, jkey: str, schedule: Schedule):
        self.cfg, self.loaded, self.jkey, self.schedule = cfg, loaded, jkey, schedule
        model, site, run = loaded.model, loaded.site, cfg.run
        prompts = load_prompts(cfg.data, model.tokenizer, run.seed)
        sl = shard_slice(len(prompts.base_BT), run.shard, run.shards)
        # Each base prompt is walked toward n_targets targets: its rows are consecutive.
        self.base_BT = prompts.base_BT[sl].repeat_interleave(run.n_targets, dim=0)
        self.base_index_B = prompts.base_index_B[sl].repeat_interleave(run.n_targets)
        self.target_index_B = torch.arange(run.n_targets).repeat(len(self.base_BT) // run.n_targets)
        stats = compute_stats(site_activations(model, prompts.stats_NT, site), loaded.sae, cfg.stats, cfg.data.prepend_bos)
        final = Site.parse(final_hook(model.cfg.n_layers), model.cfg.n_layers)
        final_norm = float(site_activations(model, prompts.stats_NT, final)[:, -1, :].norm(dim=-1).median())
        self.metric_cfg, self.thresholds = thresholds.resolve(cfg.metric, final_norm)
        pool_PD = site_activations(model, prompts.pool_PT, site)[:, -1, :]
        ctx = DirectionContext(sae=loaded.sae, stats=stats, pool_PD=pool_PD, device=loaded.device, model=model, site=site)
        try:
            self.direction = DIRECTIONS.build(cfg.direction, ctx)
        except ValueError as e:  # e.g. sae_feature:dead on an SAE without dead latents
            raise ConfigError(f"direction {cfg.direction.name!r}: {e}") from None
        self.metrics = [METRICS.get(name).impl() for name in cfg.metric.names]
        eng = cfg.engine
        self.engine = WalkEngine(
            model,
            site,
            self.metrics,
            positions=cfg.site.positions,
            path=eng.path,
            batch_size=eng.batch_size,
            logits_mb=eng.logits_mb,
            compile=eng.compile,
            walks_per_pass=PROPOSAL_CHUNK if eng.batch_invariant else None,
        )

    def plan(self) -> list[str]:
        s = self.cfg.run.shard
        return [row_id(self.jkey, s, int(p), int(t)) for p, t in zip(self.base_index_B, self.target_index_B)]

    def describe(self) -> dict[str, Any]:
        direction = {"label": self.cfg.direction.label(), "role": type(self.direction).comparison_role}
        return {
            "metrics": {m.name: m.describe() for m in self.metrics},
            "direction": direction,
            "thresholds": self.thresholds,
            "site": {"hook": self.loaded.site.hook, "positions": str(self.cfg.site.positions)},
        }

    def record(self) -> dict[str, Any]:
        return {"engine": self.engine.record()}

    def table(self, columns: dict[str, list], metadata: dict[str, Any]) -> pa.Table:
        fields = [f for m in self.metrics for f in m.fields()]
        return build_walk_table(columns, fields, declared_info_columns(), metadata)

    def batches(self) -> Iterator[dict[str, list]]:
        # Bases are walked in blocks of a few forward batches, bounding the [B, K, d] walk tensors.
        cfg = self.cfg
        T = cfg.data.n_ctx if cfg.site.positions == "all" else 1
        per_block = max(1, 4 * cfg.engine.batch_size // (self.schedule.n_steps * T) // PROPOSAL_CHUNK)
        block = PROPOSAL_CHUNK * per_block
        # One CPU generator, seeded once from the config (and the shard, so shards differ).
        gen = torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + cfg.run.shard)
        ids = self.plan()
        bar = tqdm(total=len(self.base_BT), desc=f"{cfg.direction.label()} walks", unit="walk", disable=not cfg.run.progress)
        for start in range(0, len(self.base_BT), block):
            rows = slice(start, start + block)
            yield {**self._identity_columns(rows, ids), **self._walk_block(rows, gen, bar)}
        bar.close()

    def _identity_columns(self, rows: slice, ids: list[str]) -> dict[str, list]:
        cfg = self.cfg
        n = len(ids[rows])
        return {
            "row_id": ids[rows],
            "job_key": [self.jkey] * n,
            "direction": [cfg.direction.label()] * n,
            "schedule": [cfg.schedule.name] * n,
            "grid_kind": [self.schedule.grid_kind] * n,
            "shard": [cfg.run.shard] * n,
            "prompt_index": self.base_index_B[rows].tolist(),
            "target_index": self.target_index_B[rows].tolist(),
            "seed": [cfg.run.seed] * n,
            "prompt_tokens": self.base_BT[rows].tolist(),
            **{k: [v] * n for k, v in self._context().items()},
        }

    def _context(self) -> dict[str, Any]:
        """Schema-2 context columns: what the job ran on (constant over the shard)."""
        cfg, sch = self.cfg, self.cfg.schedule
        sae_release, sae_id = cfg.sae.described()
        lengths = getattr(self.schedule, "lengths", None)
        return {
            "model": cfg.model.name,
            "sae_release": sae_release,
            "sae_id": sae_id,
            "hook": self.loaded.site.hook,
            "positions": str(cfg.site.positions),
            "schedule_n_steps": self.schedule.n_steps,
            "schedule_step_size": getattr(sch, "step_size", None),
            "schedule_preset": getattr(sch, "preset", None),
            "schedule_lengths": list(lengths) if lengths is not None else None,
        }

    def _propose(self, rows: slice, gen: torch.Generator) -> _Proposed:
        """Clean activations, proposals and walks of a few bases, always PROPOSAL_CHUNK at a time:
        the same batch shapes whatever the engine's batch size, so no target depends on it."""
        model, site = self.loaded.model, self.loaded.site
        every_position = self.cfg.site.positions == "all"
        clean_bTD = clean_site_resid(model, self.base_BT[rows].to(self.loaded.device), site)
        b, T, D = clean_bTD.shape
        # In "all" mode every position is a base with its own proposal and walk.
        base_nD = (clean_bTD.reshape(b * T, D) if every_position else clean_bTD[:, -1, :]).float()
        index_n, target_n = (
            x[rows].repeat_interleave(T) if every_position else x[rows] for x in (self.base_index_B, self.target_index_B)
        )
        with torch.inference_mode():
            prop = self.direction.propose_rows(base_nD, index_n, target_n, gen)
            walk = self.schedule.walk(base_nD, prop)
        info = _info_columns(prop, b, T if every_position else None)
        return _Proposed(clean_bTD, base_nD.norm(dim=-1).reshape(b, -1).mean(-1), walk, info)

    def _walk_block(self, rows: slice, gen: torch.Generator, bar) -> dict[str, list]:
        n_rows = len(range(*rows.indices(len(self.base_BT))))
        parts = [
            self._propose(slice(i, min(i + PROPOSAL_CHUNK, rows.start + n_rows)), gen)
            for i in range(rows.start, rows.start + n_rows, PROPOSAL_CHUNK)
        ]
        clean_bTD = torch.cat([p.clean_bTD for p in parts])
        acts_BKD, valid, grid = (torch.cat([getattr(p.walk, f) for p in parts]) for f in ("acts_BKD", "valid_BK", "grid_BK"))
        curves = self.engine.curves(clean_bTD, acts_BKD, progress=bar)
        b, T, _ = clean_bTD.shape
        if self.cfg.site.positions == "all":  # (choice) a step is kept only where every position's walk has it
            K = acts_BKD.shape[1]
            valid, grid = valid.reshape(b, T, K).all(dim=1), grid.reshape(b, T, K)[:, 0]
        valid = valid.cpu()
        out: dict[str, list] = {
            "grid": grid.float().cpu().tolist(),
            "n_valid_steps": valid.sum(-1).tolist(),
            "base_norm": torch.cat([p.base_norm_b for p in parts]).cpu().tolist(),
        }
        for m in self.metrics:
            y = torch.where(valid, curves[m.name].cpu(), torch.nan)
            out[m.name] = _lists(y, valid)
            for s in m.summaries:
                value = s.compute(y, valid, self.metric_cfg)
                out[s.column] = value.tolist()
                if s.censored is not None and s.censored_column is not None:
                    out[s.censored_column] = s.censored(value, valid).tolist()
        info = {
            key: [v for p in parts for v in p.info.get(key, [None] * p.clean_bTD.shape[0])]
            for key in dict.fromkeys(k for p in parts for k in p.info)
        }
        if self.cfg.site.positions == "all" and info:  # one value per position: the last's, and all as JSON
            info, out["info_by_position"] = by_position(info)
        return {**out, **info}


def _info_columns(prop, b: int, per_row: int | None) -> dict[str, list]:
    """The direction type's own facts; in "all" mode one list per row, an entry per position."""
    info = dict(prop.info)
    if prop.natural_length_B is not None:
        info["natural_length"] = prop.natural_length_B
    out = {}
    for key, val in info.items():
        vals = val.tolist() if torch.is_tensor(val) else list(val)
        out[key] = vals if per_row is None else [vals[i * per_row : (i + 1) * per_row] for i in range(b)]
    return out
