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

from sqlalchemy import Engine

from tracker.events import GENESIS_HASH, chain_hash
from tracker.gc_tuning import fewer_gc_passes
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
        return _check(_bodies_in_order(engine))


def _check(rows: Iterator[tuple[int, str, str, str, tuple[float, float, float]]]) -> ChainReport:
    report = ChainReport()
    expected_prev = GENESIS_HASH
    expected_seq = 1
    sha256 = hashlib.sha256
    for seq, prev_hash, hash_, body_text, times in rows:
        report.events += 1
        if seq != expected_seq:
            if seq > expected_seq:
                report.gaps.append((expected_seq, seq - 1))
                _flag(report, seq, f"seq {expected_seq}..{seq - 1} missing")
            else:
                _flag(report, seq, f"seq {seq} appears more than once")
        if prev_hash != expected_prev:
            _flag(report, seq, "prev_hash does not match the hash of the event before it")
        if sha256(f"{prev_hash}\n{body_text}".encode()).hexdigest() != hash_ and not _matches_exactly(
            prev_hash, hash_, body_text, times
        ):
            _flag(report, seq, "hash does not match the event's content")
        expected_prev = hash_
        expected_seq = seq + 1
    if report.events:
        report.head_seq = expected_seq - 1
        report.head_hash = expected_prev
    return report


def _matches_exactly(prev_hash: str, hash_: str, body_text: str, times: tuple[float, float, float]) -> bool:
    """The slow, exact check for a row whose SQL-assembled body text was not canonical.

    The database writes some numbers differently from canonical JSON (SQLite keeps 15 digits, escapes
    of control characters differ); the text still carries every value but the three times exactly,
    and those come as numbers. A row that passes here hashes to its stored hash from its own values.
    """
    try:
        body = json.loads(body_text)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    body["occurred_at"], body["observed_at"], body["recorded_at"] = times
    try:
        return chain_hash(prev_hash, body) == hash_
    except ValueError:
        return False


def _flag(report: ChainReport, seq: int, problem: str) -> None:
    if report.first_bad_seq is None:
        report.first_bad_seq = seq
        report.problem = problem


# SQL for one number as canonical JSON writes it (integral values without a fraction). SQLite keeps
# 15 significant digits, PostgreSQL the shortest exact form; where either differs from canonical JSON the
# row simply takes the exact path above.
_NUMBER = {
    "sqlite": "CASE WHEN {c} = CAST({c} AS INTEGER) THEN CAST(CAST({c} AS INTEGER) AS TEXT) ELSE CAST({c} AS TEXT) END",
    "postgresql": "CASE WHEN {c} = trunc({c}) AND abs({c}) < 1e15 THEN CAST(CAST({c} AS BIGINT) AS TEXT) "
    "ELSE CAST({c} AS TEXT) END",
}
# SQL for one string as a JSON string.
_STRING = {"sqlite": "json_quote({c})", "postgresql": "CAST(to_json({c}) AS TEXT)"}


def _body_sql(dialect: str) -> str:
    """The hashed body assembled by the database, keys in canonical order (see tracker.events.body_json)."""
    number, string = _NUMBER[dialect], _STRING[dialect]
    parts = [
        ("data", "CAST(data AS TEXT)" if dialect == "postgresql" else "data"),
        ("event_type", string.format(c="event_type")),
        ("kind", string.format(c="kind")),
        ("observed_at", number.format(c="observed_at")),
        ("occurred_at", number.format(c="occurred_at")),
        ("recorded_at", number.format(c="recorded_at")),
        ("run_id", string.format(c="run_id")),
        ("seq", "CAST(seq AS TEXT)"),
        ("thread_id", string.format(c="thread_id")),
        ("version", "CAST(version AS TEXT)"),
    ]
    members = " || ',' || ".join(f"""'"{key}":' || {sql}""" for key, sql in parts)
    return f"'{{' || {members} || '}}'"


def _bodies_in_order(engine: Engine) -> Iterator[tuple[int, str, str, str, tuple[float, float, float]]]:
    """(seq, prev_hash, hash, body text, (occurred_at, observed_at, recorded_at)) in ``seq`` order."""
    dialect = engine.dialect.name
    query = (
        f"SELECT seq, prev_hash, hash, {_body_sql(dialect)}, occurred_at, observed_at, recorded_at "
        "FROM run_events ORDER BY seq"
    )
    with engine.connect() as connection:
        database = driver(connection)
        # A server-side cursor on PostgreSQL; SQLite steps through the result as it is fetched.
        cursor = database.cursor(name="tracker_verify") if dialect == "postgresql" else database.cursor()
        try:
            cursor.execute(query)
            while rows := cursor.fetchmany(_PAGE):
                for seq, prev_hash, hash_, body_text, occurred, observed, recorded in rows:
                    yield seq, prev_hash, hash_, body_text, (occurred, observed, recorded)
        finally:
            cursor.close()
