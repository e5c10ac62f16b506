"""Where simulated time comes from: an injected clock, so the simulator's core never reads the real one.

:class:`SimulatedClock` runs faster than real time (for ``tracker simulate`` and the benchmarks);
:class:`ManualClock` only moves when a test tells it to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Simulated epoch seconds."""
        ...


class SimulatedClock:
    """Simulated time that starts at ``start`` and runs ``speed`` times faster than ``now`` (the real clock)."""

    def __init__(self, start: float, speed: float = 1.0, now: Callable[[], float] = time.time) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, not {speed}")
        self._start = start
        self._speed = speed
        self._real_now = now
        self._real_start = now()

    def now(self) -> float:
        return self._start + (self._real_now() - self._real_start) * self._speed


class ManualClock:
    """Simulated time that moves only when a test calls :meth:`advance`."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
