"""Simulated time: integer microseconds since the Unix epoch (UTC), and the diurnal load curve.

Logs, price snapshots and the world all use the same integer timestamps, so the price in force
and the load a request saw are computed identically when sampling and when taking expectations.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt

__all__ = ["US_PER_DAY", "US_PER_HOUR", "days_since", "load_at", "to_us"]

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_us(when: dt.datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime, exactly."""
    return (when - _EPOCH) // dt.timedelta(microseconds=1)


def load_at(ts_us: npt.NDArray[np.int64], peak_hour: float) -> npt.NDArray[np.float64]:
    """Diurnal load in [0, 1]: ``0.5 * (1 + cos(2 pi (hour - peak_hour) / 24))``, 1 at the peak."""
    hour = (ts_us % US_PER_DAY) / US_PER_HOUR
    return 0.5 * (1.0 + np.cos(2.0 * np.pi * (hour - peak_hour) / 24.0))


def days_since(ts_us: npt.NDArray[np.int64], start_us: int) -> npt.NDArray[np.float64]:
    """Days elapsed since the start of the log (drives the slow drift of some providers)."""
    return (ts_us - start_us) / US_PER_DAY
