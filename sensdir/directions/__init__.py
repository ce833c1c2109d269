"""Direction types (METHODS §3). Each module in this package registers one type.

``DIRECTIONS.names()`` lists them; ``direction=<name>`` selects one from the command line.
"""

from sensdir.directions.base import DIRECTIONS, Direction

__all__ = ["DIRECTIONS", "Direction"]
