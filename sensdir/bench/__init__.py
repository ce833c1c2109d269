"""``python -m sensdir.bench`` (``make bench``): sensdir's engine against the papers' computation.

The naive reference is what the papers' code does: a hook overwrites the site activation and
the whole sequence runs through the whole model, one batch of steps per prompt. The engine
runs only the perturbed last position from the site's layer on, on the clean prefix's cached
keys and values, and unembeds only that position.

Both paths see the same prompts (random token ids), the same site (``blocks.1.hook_resid_pre``,
last position) and the same walks (100 relative steps toward a random target of the base's
norm). Reported per case: perturbation-steps per second of each path and their ratio, peak
memory, the largest relative difference in KL and L2 (``max |a - b| / max |b|`` over each
curve), and the achieved GFLOP/s (useful work of the path / time) against this machine's
measured matmul GFLOP/s. Then the wall time of the whole blowup experiment (1000 prompts x 4
direction types x 100 steps) through ``run_job`` on the GPT-2-shaped model.
"""

from sensdir.bench.cases import GPT2_SHAPE, step_flops
from sensdir.bench.cli import main, targets

__all__ = ["GPT2_SHAPE", "main", "step_flops", "targets"]
