"""Metrics (METHODS §4): per-step curves of a walk and their per-row summaries.

Each module of this package registers one metric; a metric declares how its curve is read
from the perturbed model, which summaries (max-slope step, plateau length, ...) are computed
from it, and so which shard columns it adds and which statistics the reduce reports. Adding a
metric is adding one file (or registering from anywhere before the job runs).
"""

from sensdir.metrics.base import METRICS, Metric, Readout, Summary

__all__ = ["METRICS", "Metric", "Readout", "Summary"]
