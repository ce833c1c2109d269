"""``l2``: ‖final residual_k − final residual_0‖ at the perturbed position (METHODS §4)."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from sensdir.config import MetricConfig
from sensdir.metrics.base import METRICS, Metric, Readout
from sensdir.metrics.summaries import max_slope, plateau


@METRICS.register("l2", MetricConfig)
class L2(Metric):
    name = "l2"
    label = "L2"
    unit = "final-residual norm units"
    summaries = (max_slope("l2", "L2"), plateau())

    def curve(self, final_wKD: Float[Tensor, "w K d"], readout: Readout) -> Float[Tensor, "w K"]:
        return (final_wKD.float() - final_wKD[:, :1, :].float()).norm(dim=-1)
