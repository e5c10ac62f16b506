"""Objects that keep arriving: Poisson streams, each drawing its gaps from its own seeded RNG.

A stream is a callback that creates one object at a given simulated time. :meth:`Arrivals.due` makes every
arrival up to now happen, in time order (on a tie, in the order the streams were added), so whoever reads
the world at an instant sees exactly the objects that arrived before it, created at their arrival times.
Not thread-safe: its owner calls it under its own lock.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class _Stream:
    rng: random.Random
    mean_gap_s: float
    arrive: Callable[[float], object]


class Arrivals:
    """Streams of arrivals, each with exponential gaps of mean ``mean_gap_s`` drawn from its own RNG."""

    def __init__(self) -> None:
        self._streams: list[_Stream] = []
        self._next: list[tuple[float, int]] = []  # heap of (arrival time, stream number)

    def add(self, rng: random.Random, mean_gap_s: float, start: float, arrive: Callable[[float], object]) -> None:
        """A stream whose first arrival comes one gap after ``start``; ``arrive(when)`` creates an object."""
        self._streams.append(_Stream(rng, mean_gap_s, arrive))
        heapq.heappush(self._next, (start + rng.expovariate(1 / mean_gap_s), len(self._streams)))

    def due(self, now: float) -> None:
        """Make every arrival up to ``now`` happen, at its own time."""
        while self._next and self._next[0][0] <= now:
            when, number = heapq.heappop(self._next)
            stream = self._streams[number - 1]
            stream.arrive(when)
            heapq.heappush(self._next, (when + stream.rng.expovariate(1 / stream.mean_gap_s), number))
