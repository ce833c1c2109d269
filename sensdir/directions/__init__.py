"""Direction types (METHODS §3). Each module in this package registers one type.

``DIRECTIONS.names()`` lists them; ``direction=<name>`` selects one from the command line.
"""

from sensdir.directions.base import DIRECTIONS, Direction
from sensdir.walk_types import DirectionContext  # noqa: F401  (shim for sensdir/job.py until it moves)

__all__ = ["DIRECTIONS", "Direction"]
