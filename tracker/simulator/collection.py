"""The objects of one kind in a simulated world (background responses, batches, fine-tuning jobs): kept by id
and in the API's list order, created by clients, by :meth:`Collection.populate` or by streams of arrivals,
and read at the clock's current time.

Each kind's module subclasses :class:`Collection` with its create and cancel calls and says how to draw an
object (id, settings and a plan whose ``timeline`` gives its phases), how to render it at an instant, and
what its creator typically asks for. A record keeps what never changes and when a client cancelled it; the
timeline is compiled again only after that. Each object is drawn from its own RNG, seeded by the world's
seed, the kind and the object's creation order, so the same seed and the same calls at the same simulated
times give the same answers. Calls are thread-safe (one lock per kind).
"""

from __future__ import annotations

import bisect
import json
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from tracker.simulator.arrivals import Arrivals
from tracker.simulator.clocks import Clock
from tracker.simulator.errors import NotFound
from tracker.simulator.params import check_paging, page
from tracker.simulator.records import ts
from tracker.simulator.timeline import Phase, Timeline

JSON = dict[str, Any]


class Plan(Protocol):
    def timeline(self, created_at: float, cancel_at: float | None) -> Timeline: ...


PlanT = TypeVar("PlanT", bound=Plan)


@dataclass
class Record(Generic[PlanT]):
    id: str
    created_at: float
    settings_json: str  # what the creator asked for, as served: decoding beats a deepcopy per render
    plan: PlanT
    cancel_at: float | None = None  # when a client cancelled it
    _timeline: Timeline | None = field(default=None, repr=False)

    @classmethod
    def of(cls, object_id: str, created_at: float, settings: JSON, plan: PlanT) -> Record[PlanT]:
        return cls(object_id, created_at, json.dumps(settings), plan)

    def timeline(self) -> Timeline:
        """Compiled on first use and again after a cancel changed the object's future."""
        if self._timeline is None:
            self._timeline = self.plan.timeline(self.created_at, self.cancel_at)
        return self._timeline

    def phase_at(self, now: float) -> Phase:
        return self.timeline().phase_at(now)

    def settings(self) -> JSON:
        settings: JSON = json.loads(self.settings_json)
        return settings

    def cancel(self, now: float) -> None:
        self.cancel_at = now
        self._timeline = None

    def sort_key(self) -> tuple[int, str]:
        return (ts(self.created_at), self.id)


class Collection(ABC, Generic[PlanT]):
    """The objects of one kind; subclasses add the kind's calls and fill in the abstract methods."""

    kind: ClassVar[str]  # seeds the RNGs, e.g. "batch"
    not_found: ClassVar[str]  # the 404 message, with {id}

    def __init__(self, seed: int, clock: Clock) -> None:
        self._seed = seed
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, Record[PlanT]] = {}
        self._ordered: list[Record[PlanT]] = []  # as the API lists them: created_at, then id
        self._created = 0
        self._populations = 0
        self._arrivals = Arrivals()

    def retrieve(self, object_id: str) -> JSON:
        with self._lock:
            now = self._catch_up()
            return self._render(self._find(object_id, now), now)

    def cancel(self, object_id: str) -> JSON:
        with self._lock:
            now = self._catch_up()
            record = self._find(object_id, now)
            self._cancel(record, now)
            return self._render(record, now)

    def ids(self) -> list[str]:
        """Every object's id, oldest first (forgotten ones included)."""
        with self._lock:
            self._catch_up()
            return [record.id for record in self._ordered]

    def populate(self, count: int, *, history_s: float = 600.0, mean_arrival_s: float | None = None) -> list[str]:
        """Create ``count`` objects over the last ``history_s`` simulated seconds (so some have ended and some
        are live), as their typical creators ask for them. With ``mean_arrival_s``, new ones then keep
        arriving, on average one every ``mean_arrival_s`` simulated seconds. Returns the new objects' ids."""
        with self._lock:
            now = self._catch_up()
            rng = random.Random(f"{self._seed}:{self.kind}:history:{self._populations}")
            self._populations += 1
            offsets = sorted((rng.uniform(0.0, history_s) for _ in range(count)), reverse=True)
            created = [self._add(now - offset, self._typical_settings(rng)).id for offset in offsets]
            if mean_arrival_s is not None:
                self._arrivals.add(rng, mean_arrival_s, now, lambda when: self._add(when, self._typical_settings(rng)))
            return created

    def _page(
        self, limit: int, after: str | None, now: float, keep: Callable[[Record[PlanT]], bool] = lambda record: True
    ) -> tuple[list[JSON], bool]:
        """Newest first, ``limit`` of the objects ``keep`` keeps, after the one with id ``after``."""
        check_paging(limit, "desc")
        listed = [record.id for record in self._ordered if keep(record)]
        chosen, has_more = page(listed, limit=limit, order="desc", after=after, before=None)
        return [self._render(self._records[object_id], now) for object_id in chosen], has_more

    def _create(self, settings: JSON) -> JSON:
        with self._lock:
            now = self._catch_up()
            return self._render(self._add(now, settings), now)

    def _add(self, created_at: float, settings: JSON) -> Record[PlanT]:
        rng = random.Random(f"{self._seed}:{self.kind}:{self._created}")
        self._created += 1
        record = self._draw(rng, created_at, settings)
        self._records[record.id] = record
        bisect.insort(self._ordered, record, key=Record.sort_key)
        return record

    def _catch_up(self) -> float:
        now = self._clock.now()
        self._arrivals.due(now)
        return now

    def _find(self, object_id: str, now: float) -> Record[PlanT]:
        record = self._records.get(object_id)
        if record is None or self._forgotten(record, now):
            raise NotFound(self.not_found.format(id=object_id))
        return record

    def _forgotten(self, record: Record[PlanT], now: float) -> bool:
        """Whether the API no longer keeps the object (never, unless the kind says otherwise)."""
        return False

    @abstractmethod
    def _draw(self, rng: random.Random, created_at: float, settings: JSON) -> Record[PlanT]:
        """A new object created at ``created_at`` as asked by ``settings``, its future drawn from ``rng``."""

    @abstractmethod
    def _typical_settings(self, rng: random.Random) -> JSON:
        """What a typical creator of a populated or arriving object asks for."""

    @abstractmethod
    def _render(self, record: Record[PlanT], now: float) -> JSON:
        """The API's object at ``now``."""

    @abstractmethod
    def _cancel(self, record: Record[PlanT], now: float) -> None:
        """Cancel the object now, or raise what the API answers when its status forbids it."""
