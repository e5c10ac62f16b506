"""``audit verify``: stream the log in ``seq`` order and recompute the hash chain.

A modified event fails its own hash; a deleted, inserted, duplicated or reordered one breaks the
``prev_hash`` link (or the ``seq`` sequence) at the first place it touches. The first bad ``seq`` is
reported together with every gap in ``seq``. The log is read in keyset pages, so memory stays flat.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from tracker.events import GENESIS_HASH, Event, chain_hash, event_body
from tracker.store.projections import event_from_row
from tracker.store.schema import run_events

_PAGE = 20_000


@dataclass
class ChainReport:
    """The outcome of a verification."""

    events: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    first_bad_seq: int | None = None
    problem: str | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None and not self.gaps


def verify_chain(engine: Engine) -> ChainReport:
    """Recompute the chain over every event; see the module docstring for what is detected."""
    report = ChainReport()
    expected_prev = GENESIS_HASH
    expected_seq = 1
    for event in _events_in_order(engine):
        report.events += 1
        if event.seq != expected_seq:
            report.gaps.append((expected_seq, event.seq - 1))
            _flag(report, event.seq, f"seq {expected_seq}..{event.seq - 1} missing")
        if event.prev_hash != expected_prev:
            _flag(report, event.seq, "prev_hash does not match the hash of the event before it")
        if chain_hash(event.prev_hash, event_body(event)) != event.hash:
            _flag(report, event.seq, "hash does not match the event's content")
        expected_prev = event.hash
        expected_seq = event.seq + 1
        report.head_seq = event.seq
        report.head_hash = event.hash
    return report


def _flag(report: ChainReport, seq: int, problem: str) -> None:
    if report.first_bad_seq is None:
        report.first_bad_seq = seq
        report.problem = problem


def _events_in_order(engine: Engine) -> Iterator[Event]:
    last = 0
    with engine.connect() as connection:
        while True:
            query = select(run_events).where(run_events.c.seq > last).order_by(run_events.c.seq).limit(_PAGE)
            rows = connection.execute(query).all()
            if not rows:
                return
            for row in rows:
                yield event_from_row(row._mapping)
            last = int(rows[-1].seq)
