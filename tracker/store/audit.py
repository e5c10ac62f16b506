"""``audit verify``: stream the log in ``seq`` order and recompute the hash chain.

A modified event fails its own hash; a deleted, inserted, duplicated or reordered one breaks the
``prev_hash`` link (or the ``seq`` sequence) at the first place it touches. The first bad ``seq`` is
reported together with every gap in ``seq``. The log is streamed by one ordered query (a server-side
cursor on PostgreSQL), so memory stays flat and no row can fall between two pages: keyset pages
resuming at ``seq > last`` would skip a second row claiming the same ``seq`` (once the primary key
has been dropped) when the two straddle a page boundary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from tracker.events import GENESIS_HASH, chain_hash
from tracker.gc_tuning import fewer_gc_passes
from tracker.store.background import ConnectionWorker
from tracker.store.bulk import driver

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
    with fewer_gc_passes():
        return _check(_pages_in_order(engine))


# A row of _pages_in_order: seq, prev_hash, hash, the body text up to observed_at's value, then
# observed_at, occurred_at, recorded_at (numbers on SQLite, canonical text on PostgreSQL), then the rest.
_Row = tuple[int, str, str, str, Any, Any, Any, str]


def _check(pages: Iterator[list[_Row]]) -> ChainReport:
    report = ChainReport()
    expected_prev = GENESIS_HASH
    expected_seq = 1
    sha256 = hashlib.sha256
    for page in pages:
        for seq, prev_hash, hash_, head, observed, occurred, recorded, tail in page:
            # The body's three times sit together in canonical key order (tracker.events.body_json).
            body_text = f'{head}{observed},"occurred_at":{occurred},"recorded_at":{recorded}{tail}'
            if seq != expected_seq:
                if seq > expected_seq:
                    report.gaps.append((expected_seq, seq - 1))
                    _flag(report, seq, f"seq {expected_seq}..{seq - 1} missing")
                else:
                    _flag(report, seq, f"seq {seq} appears more than once")
            if prev_hash != expected_prev:
                _flag(report, seq, "prev_hash does not match the hash of the event before it")
            if sha256(f"{prev_hash}\n{body_text}".encode()).hexdigest() != hash_ and not _matches_exactly(
                prev_hash, hash_, body_text, (occurred, observed, recorded)
            ):
                _flag(report, seq, "hash does not match the event's content")
            expected_prev = hash_
            expected_seq = seq + 1
        report.events += len(page)
    if report.events:
        report.head_seq = expected_seq - 1
        report.head_hash = expected_prev
    return report


def _matches_exactly(prev_hash: str, hash_: str, body_text: str, times: tuple[Any, Any, Any]) -> bool:
    """The slow, exact check for a row whose assembled body text was not canonical.

    The database may write a value differently from canonical JSON (PostgreSQL's text for a huge or tiny
    time, escapes of control characters in stored text); the text still carries every value exactly, and
    the times (occurred, observed, recorded) come as exact numbers or their shortest exact text. A row
    that passes here hashes to its stored hash from its own values.
    """
    try:
        body = json.loads(body_text)
        exact_times = [float(value) for value in times]
    except (TypeError, ValueError):  # not JSON, or a time that is NULL or not a number
        return False
    if not isinstance(body, dict):
        return False
    body["occurred_at"], body["observed_at"], body["recorded_at"] = exact_times
    try:
        return chain_hash(prev_hash, body) == hash_
    except ValueError:
        return False


def _flag(report: ChainReport, seq: int, problem: str) -> None:
    if report.first_bad_seq is None:
        report.first_bad_seq = seq
        report.problem = problem


# SQL for one time as canonical JSON writes it (integral values without a fraction). SQLite gives the
# number itself (an integer or a float, which Python writes exactly as canonical JSON does); PostgreSQL,
# which cannot return both types from one column, gives its shortest exact text. Where that text differs
# from canonical JSON, the row simply takes the exact path above.
_TIME = {
    "sqlite": "CASE WHEN {c} = CAST({c} AS INTEGER) THEN CAST({c} AS INTEGER) ELSE {c} END",
    "postgresql": "CASE WHEN {c} = trunc({c}) AND abs({c}) < 1e15 THEN CAST(CAST({c} AS BIGINT) AS TEXT) "
    "ELSE CAST({c} AS TEXT) END",
}
# SQL for one string as a JSON string.
_STRING = {"sqlite": "json_quote({c})", "postgresql": "CAST(to_json({c}) AS TEXT)"}


def _body_sql(dialect: str) -> str:
    """The columns that make up the hashed body, keys in canonical order (tracker.events.body_json).

    The text before the three times and the text after them are assembled by the database; the times
    come on their own, because turning a floating-point number into text costs SQLite more than
    everything else in the query.
    """
    time, string = _TIME[dialect], _STRING[dialect]
    head = [
        ("data", "CAST(data AS TEXT)" if dialect == "postgresql" else "data"),
        ("event_type", string.format(c="event_type")),
        ("kind", string.format(c="kind")),
    ]
    tail = [
        ("run_id", string.format(c="run_id")),
        ("seq", "CAST(seq AS TEXT)"),
        ("thread_id", string.format(c="thread_id")),
        ("version", "CAST(version AS TEXT)"),
    ]
    head_sql = "'{' || " + " || ',' || ".join(f"""'"{key}":' || {sql}""" for key, sql in head)
    tail_sql = " || ".join(f"""',"{key}":' || {sql}""" for key, sql in tail) + " || '}'"
    times = ", ".join(time.format(c=name) for name in ("observed_at", "occurred_at", "recorded_at"))
    return f"""{head_sql} || ',"observed_at":', {times}, {tail_sql}"""


def _pages_in_order(engine: Engine) -> Iterator[list[_Row]]:
    """Pages of :data:`_Row` in ``seq`` order, from one ordered query.

    On PostgreSQL a worker thread fetches the next page while the caller hashes this one, so the server
    assembles text while Python hashes. SQLite works in this process, where a second thread only
    contends for the GIL (measured: 15 % slower), so it is read directly.
    """
    dialect = engine.dialect.name
    query = f"SELECT seq, prev_hash, hash, {_body_sql(dialect)} FROM run_events ORDER BY seq"
    with engine.connect() as connection:
        database = driver(connection)
        if dialect != "postgresql":
            cursor = database.cursor()
            try:
                cursor.execute(query)
                while rows := cursor.fetchmany(_PAGE):
                    yield rows
            finally:
                cursor.close()
            return
        server_side = database.cursor(name="tracker_verify")
        try:
            with ConnectionWorker(connection) as worker:
                worker.call(lambda _: server_side.execute(query)).result()
                page = worker.call(lambda _: server_side.fetchmany(_PAGE))
                while rows := page.result():
                    page = worker.call(lambda _: server_side.fetchmany(_PAGE))
                    yield rows
        finally:
            server_side.close()
