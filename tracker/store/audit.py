"""``audit verify``: stream the log in ``seq`` order and recompute the hash chain.

A modified event fails its own hash; a deleted, inserted, duplicated or reordered one breaks the
``prev_hash`` link (or the ``seq`` sequence) at the first place it touches. The first bad ``seq`` is
reported together with every gap in ``seq``. The log is streamed by one ordered query (a server-side
cursor on PostgreSQL), so memory stays flat and no row can fall between two pages: keyset pages
resuming at ``seq > last`` would skip a second row claiming the same ``seq`` (once the primary key
has been dropped) when the two straddle a page boundary.
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
        if event.seq > expected_seq:
            report.gaps.append((expected_seq, event.seq - 1))
            _flag(report, event.seq, f"seq {expected_seq}..{event.seq - 1} missing")
        elif event.seq < expected_seq:
            _flag(report, event.seq, f"seq {event.seq} appears more than once")
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
    query = select(run_events).order_by(run_events.c.seq)
    with engine.connect() as connection:
        for row in connection.execution_options(yield_per=_PAGE).execute(query):
            yield event_from_row(row._mapping)
