"""Step schedules (METHODS §2). Each module in this package registers one schedule."""

from sensdir.schedules.base import SCHEDULES, Schedule

__all__ = ["SCHEDULES", "Schedule"]
