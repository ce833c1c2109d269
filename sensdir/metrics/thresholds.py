"""Thresholds on the model's own scale (METHODS §10).

GPT-2 small's plateau threshold (final-residual L2 >= 20) means nothing on a model whose final
residuals are a tenth as long. ``metric.plateau_rule=final_norm`` reads ``metric.plateau_l2``
as a fraction of the median final-residual norm (last position) of the job's stats prompts;
the job resolves it to an absolute threshold once, and records both in the shard.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sensdir.config import MetricConfig, PlateauRule


def resolve(cfg: MetricConfig, median_final_norm: float) -> tuple[MetricConfig, dict[str, Any]]:
    """(the config with ``plateau_l2`` absolute, the record of how it was set)."""
    if cfg.plateau_rule == PlateauRule.final_norm:
        value = cfg.plateau_l2 * median_final_norm
        rule = f"l2 >= {cfg.plateau_l2:g} x median final-residual norm {median_final_norm:.4g} = {value:.4g}"
    else:
        value = cfg.plateau_l2
        rule = f"l2 >= {value:g} (absolute; median final-residual norm here {median_final_norm:.4g})"
    record = {
        "plateau_l2": value,
        "plateau_rule": str(cfg.plateau_rule),
        "plateau_l2_setting": cfg.plateau_l2,
        "median_final_norm": median_final_norm,
        "plateau_rule_text": rule,
        "ms_threshold": cfg.ms_threshold,
        "ms_tie_rtol": cfg.ms_tie_rtol,
    }
    return dataclasses.replace(cfg, plateau_l2=value, plateau_rule=PlateauRule.absolute), record
