"""Which faults the simulated server injects, and the seeded dice that decide them request by request.

A :class:`Faults` value is a frozen description (what, how often, on which routes); :class:`FaultDice` rolls
it. Each kind of fault fires with a probability and/or on every n-th request it applies to, counted from the
moment the faults were set. At most one of drop, rate_limit, server_error, malformed hits a request (checked
in that order); ``slow`` adds its delay on top of whatever else happens.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Literal

Fault = Literal["drop", "rate_limit", "server_error", "malformed"]
FAULTS: tuple[Fault, ...] = ("drop", "rate_limit", "server_error", "malformed")


@dataclass(frozen=True)
class Trigger:
    """When a fault fires: with probability ``p`` per request, and on every ``every``-th request (0: never)."""

    p: float = 0.0
    every: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0 or self.every < 0:
            raise ValueError(f"a trigger needs 0 <= p <= 1 and every >= 0, not {self}")


NEVER = Trigger()


@dataclass(frozen=True)
class Faults:
    """Faults to inject. ``routes`` limits them to these route kinds (see ``routes.ROUTES``); None means all.

    - ``rate_limit``: 429 with ``Retry-After: retry_after_s`` and/or ``retry-after-ms: retry_after_ms``
      (None leaves a header out; above 120 s the official SDK raises instead of waiting).
    - ``server_error``: 500 with the API's error body.
    - ``slow``: ``slow_s`` extra seconds before answering.
    - ``drop``: the connection is closed without any response.
    - ``malformed``: status 200 with the JSON body cut in half (the request itself took effect).
    """

    seed: int = 0
    rate_limit: Trigger = NEVER
    retry_after_s: float | None = 1.0
    retry_after_ms: int | None = None
    server_error: Trigger = NEVER
    slow: Trigger = NEVER
    slow_s: float = 2.0
    drop: Trigger = NEVER
    malformed: Trigger = NEVER
    routes: frozenset[str] | None = None


@dataclass(frozen=True)
class Roll:
    """What happens to one request."""

    fault: Fault | None
    delay_s: float


class FaultDice:
    """Rolls :class:`Faults` for each request; thread-safe, reproducible for a seed and a request order."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()
        self._seen = 0

    def roll(self, route_kind: str) -> Roll:
        faults = self.faults
        if faults.routes is not None and route_kind not in faults.routes:
            return Roll(None, 0.0)
        with self._lock:
            self._seen += 1
            # One draw per trigger on every request keeps the sequence the same whichever faults fire.
            fired = {name: self._fires(getattr(faults, name)) for name in (*FAULTS, "slow")}
        fault = next((name for name in FAULTS if fired[name]), None)
        return Roll(fault, faults.slow_s if fired["slow"] else 0.0)

    def _fires(self, trigger: Trigger) -> bool:
        draw = self._rng.random()
        return draw < trigger.p or (trigger.every > 0 and self._seen % trigger.every == 0)
