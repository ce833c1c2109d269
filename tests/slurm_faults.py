"""A test-only direction type for fault injection on the local SLURM cluster.

``slow_real`` is ``real`` whose first block of walks sleeps ``direction.sleep_s`` seconds
(or, where that is 0, ``$SLURM_FAULTS_SLEEP_S``: a sweep over several direction types cannot
set a field only one of them has), on a task's first attempt only (SLURM sets
``SLURM_RESTART_COUNT`` from the first requeue on), so that a test can kill a task mid-run, or
let it hit its time limit, after its plan is written and before its shard is. A requeued
attempt runs at full speed.

It reaches the SLURM tasks through sensdir's documented third-party plugin mechanism, the
``sensdir.direction`` entry-point group: ``write_plugin_dist`` writes a ``.dist-info`` with
that entry point into a temporary directory that the tests put on ``PYTHONPATH`` of the sweep
(sbatch passes the environment on to the tasks). Nothing in ``sensdir/`` knows about it, and
the pytest process itself never registers it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from sensdir.directions.base import DIRECTIONS
from sensdir.directions.real import Real, RealConfig

DIST = "sensdir_slurm_faults-0.0.dist-info"


@dataclass(frozen=True)
class SlowRealConfig(RealConfig):
    name: str = "slow_real"
    sleep_s: float = 0.0


@DIRECTIONS.register("slow_real", SlowRealConfig)
class SlowReal(Real):
    _slept = False

    def propose(self, base_BD, base_index_B, gen):
        first_attempt = os.environ.get("SLURM_RESTART_COUNT", "0") in ("", "0")
        sleep_s = self.cfg.sleep_s or float(os.environ.get("SLURM_FAULTS_SLEEP_S", "0"))
        if first_attempt and not self._slept and sleep_s > 0:
            self._slept = True
            print(f"slow_real: sleeping {sleep_s} s (first attempt)", flush=True)
            time.sleep(sleep_s)
        return super().propose(base_BD, base_index_B, gen)


def write_plugin_dist(directory: Path) -> Path:
    """A minimal installed-distribution record advertising ``slow_real``; put ``directory``
    (and this file's directory) on PYTHONPATH to make it visible to ``sensdir``."""
    d = directory / DIST
    d.mkdir(parents=True, exist_ok=True)
    (d / "METADATA").write_text("Metadata-Version: 2.1\nName: sensdir-slurm-faults\nVersion: 0.0\n")
    (d / "entry_points.txt").write_text("[sensdir.direction]\nslow_real = slurm_faults\n")
    return directory
