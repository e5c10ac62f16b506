"""``audit verify``: stream the log in ``seq`` order and recompute the hash chain.

A modified event fails its own hash; a deleted, inserted, duplicated or reordered one breaks the
``prev_hash`` link (or the ``seq`` sequence) at the first place it touches. The first bad ``seq`` is
reported together with every gap in ``seq``. The log is streamed by one ordered query per ``seq`` range
(a server-side cursor on PostgreSQL), so memory stays flat and no row can fall between two pages:
keyset pages resuming at ``seq > last`` would skip a second row claiming the same ``seq`` (once the
primary key has been dropped) when the two straddle a page boundary. A big log is split into ranges
by ``seq`` value, checked in parallel processes; every row falls in exactly one range, and the links
between ranges are checked when the reports are merged.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy import text as sql_text

from tracker.events import (
    GENESIS_HASH,
    LEDGER_KIND,
    LEDGER_STREAM,
    LOG_PURGED,
    PAYLOAD_ERASED,
    canonical_json,
    chain_hash,
    stored_body,
    strict_json,
)
from tracker.gc_tuning import fewer_gc_passes
from tracker.store.background import ConnectionWorker
from tracker.store.bulk import driver

# Rows per fetch: a page and the one prefetched are in memory at once (about 10 MB each on PostgreSQL).
_PAGE = 5_000


@dataclass
class ChainReport:
    """The outcome of a verification."""

    events: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    first_bad_seq: int | None = None
    problem: str | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)
    # Where the check started: (0, genesis) for a whole log; after a purge, the purged range's last
    # (seq, hash); for an incremental check, the trusted checkpoint's.
    anchor: tuple[int, str] = (0, GENESIS_HASH)
    purge: dict[str, Any] | None = None  # the data of the newest log_purged event, if the log was purged
    # What is wrong outside the chain: payload bodies (run_payloads) and archived states (archived_runs).
    outside: list[str] = field(default_factory=list)
    state: tuple[Any, ...] = field(default=(), compare=False, repr=False)  # see _audit_state

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None and not self.gaps and not self.outside

    def first_problem(self) -> str:
        """The first thing wrong, as one phrase ("" when nothing is)."""
        if self.first_bad_seq is not None:
            return f"the chain is broken at seq {self.first_bad_seq} ({self.problem})"
        if self.gaps:
            first, last = self.gaps[0]
            return f"seq {first}..{last} missing"
        return self.outside[0] if self.outside else ""


def verify_chain(
    engine: Engine, processes: int | None = None, since: tuple[int, str] | None = None, outside: bool | None = None
) -> ChainReport:
    """Recompute the chain over every event; see the module docstring for what is detected.

    The chain starts at genesis, or, once the log has been purged (``tracker audit purge``), right after
    the purged range, whose last hash the purge recorded. ``since`` (seq, hash), from a trusted checkpoint,
    checks only the events after it, and that the event at that seq still has that hash. ``outside`` (by
    default: unless ``since`` is given) also checks every payload body against its digest, a pass over the
    whole payload table that an incremental check skips.

    A log of :data:`PARALLEL_FROM` events or more is checked in ``processes`` (default: one per CPU, at
    most 4) contiguous ``seq`` ranges at once, each in its own process; the links between the ranges
    are checked here, so the report is the one a single pass would give.
    """
    report = _verify_once(engine, processes, since, outside)
    # A purge or an erasure that committed while the log was read (in several statements, several
    # connections) would look like tampering: read again once if either moved.
    if _audit_state(engine) != report.state:
        report = _verify_once(engine, processes, since, outside)
    return report


def _audit_state(engine: Engine) -> tuple[Any, ...]:
    """What a concurrent purge or erasure changes: the newest purge and the count of erased payloads."""
    with engine.connect() as connection:
        return tuple(
            connection.execute(
                sql_text(
                    "SELECT (SELECT max(through_seq) FROM ledger_purges), "
                    "(SELECT count(*) FROM run_payloads WHERE erased_at IS NOT NULL)"
                )
            ).one()
        )


def _verify_once(
    engine: Engine, processes: int | None, since: tuple[int, str] | None, outside: bool | None
) -> ChainReport:
    state = _audit_state(engine)
    if processes is None:
        processes = min(os.cpu_count() or 1, 4)
    found = latest_purge(engine)
    purged = purge_anchor(found[1]) if found is not None else None
    malformed = found is not None and purged is None
    anchor = since or purged or (0, GENESIS_HASH)
    bounds = _ranges(engine, processes, anchor[0])
    with fewer_gc_passes():
        if len(bounds) == 1:
            report = _merge([_check_range(engine, *bounds[0], anchor)])
        else:
            url = engine.url.render_as_string(hide_password=False)
            # One thread per range, each waiting on its worker process.
            with ThreadPoolExecutor(len(bounds)) as threads:
                segments = threads.map(lambda bound: _run_worker(url, *bound), _with_anchor(bounds, anchor))
                report = _merge(list(segments))
    report.anchor, report.purge = anchor, found[1] if found is not None and not malformed else None
    if report.events == 0:
        report.head_seq, report.head_hash = anchor
    if found is not None and malformed:
        _flag(report, found[0], "a log_purged event without a well-formed through_seq and through_hash")
    _check_before_anchor(engine, report, since is not None)
    _check_purge_records(engine, report, found[0] if found is not None else 0)
    if outside if outside is not None else since is None:
        _check_payloads(engine, report)
    report.state = state
    return report


def latest_purge(engine: Engine) -> tuple[int, dict[str, Any]] | None:
    """(seq, data) of the newest ``log_purged`` event (the ledger's own stream), or None."""
    query = (
        "SELECT seq, CAST(data AS TEXT) FROM run_events WHERE run_id = :stream AND kind = :kind "
        "AND event_type = :type ORDER BY seq DESC LIMIT 1"
    )
    with engine.connect() as connection:
        row = connection.execute(
            sql_text(query), {"stream": LEDGER_STREAM, "kind": LEDGER_KIND, "type": LOG_PURGED}
        ).first()
    if row is None:
        return None
    try:
        data = json.loads(row[1])
    except (TypeError, ValueError):
        data = None
    return int(row[0]), data if isinstance(data, dict) else {}


def purge_checkpoint_field(purge: Mapping[str, Any] | None, name: str) -> Any:
    """Field ``name`` of the checkpoint a purge's data carries (None when there is no such field); only
    as good as that checkpoint's signature (tracker.store.checkpoints.check_purge)."""
    checkpoint = purge.get("checkpoint") if purge is not None else None
    return checkpoint.get(name) if isinstance(checkpoint, dict) else None


def purge_anchor(data: dict[str, Any]) -> tuple[int, str] | None:
    """(through_seq, through_hash) of a purge's data, or None when they are not there as they must be."""
    through_seq, through_hash = data.get("through_seq"), data.get("through_hash")
    if type(through_seq) is not int or through_seq < 1 or not isinstance(through_hash, str):
        return None
    if len(through_hash) != 64 or any(c not in "0123456789abcdef" for c in through_hash):
        return None
    return through_seq, through_hash


def _check_purge_records(engine: Engine, report: ChainReport, purge_seq: int) -> None:
    """The purge the chain starts after must be the newest purge ``ledger_purges`` recorded, and the other
    way round: that table is what lets the delete guard through, so it may not say more than the chain.
    The archived run states (where a rebuild starts; no event covers them any more) must be the ones the
    purge's signed checkpoint took the digest of."""
    with engine.connect() as connection:
        recorded = connection.execute(sql_text("SELECT max(through_seq) FROM ledger_purges")).scalar()
        anchor = purge_anchor(report.purge) if report.purge is not None else None
        chained = anchor[0] if anchor is not None else None
        recorded = None if recorded is None else int(recorded)
        if recorded != chained:
            _flag(
                report,
                recorded if recorded is not None else purge_seq,
                f"ledger_purges records a purge through seq {recorded}, the chain "
                + (f"one through seq {chained}" if chained is not None else "none"),
            )
        if report.purge is None:
            if connection.execute(sql_text("SELECT count(*) FROM archived_runs")).scalar_one():
                report.outside.append("archived_runs holds run states, but the log was never purged")
        elif archived_states_digest(connection) != purge_checkpoint_field(report.purge, "archived_states_sha256"):
            report.outside.append(
                f"archived_runs differs from the states the purge (seq {purge_seq}) signed the digest of"
            )


def archived_states_digest(connection: Connection) -> str:
    """A digest of ``archived_runs``: SHA-256 over the sorted SHA-256s of (run_id, newline, the stored text
    of its state), one per row. The signed purge checkpoint carries it; verify recomputes it, since those
    states are what a rebuild starts from and no event covers them any more. (Sorted, not summed: a sum
    of hashes can be matched by a crafted set of rows.)"""
    # Per statement: Connection.execution_options() would change the caller's connection for good.
    rows = connection.execute(
        sql_text("SELECT run_id, CAST(state AS TEXT) FROM archived_runs"),
        execution_options={"stream_results": True, "yield_per": _PAGE},
    )
    digests = sorted(hashlib.sha256(f"{run_id}\n{state}".encode()).digest() for run_id, state in rows)
    return hashlib.sha256(b"".join(digests)).hexdigest()


# Problems outside the chain listed one by one, up to this many; then only counted.
_LISTED = 20


def _check_payloads(engine: Engine, report: ChainReport) -> None:
    """Each payload body must hash to its digest (the value the chain covers); an erased one must be null
    and named by a ``payload_erased`` event still in the log, or, for erasures whose events a purge
    removed, be among the erased payloads whose digest the purge's checkpoint signed."""
    problems: list[str] = []
    erased_rows: list[tuple[str, str, str]] = []
    with engine.connect() as connection:
        # Payloads first, then the erasure events: an erasure committing in between is then seen whole.
        rows = connection.execute(
            sql_text("SELECT run_id, digest, field, CAST(body AS TEXT), erased_at FROM run_payloads"),
            execution_options={"stream_results": True, "yield_per": _PAGE},
        )
        for run_id, digest, name, body, erased_at in rows:
            where = f"run {run_id}: payload {name} {digest[:12]}"
            if erased_at is None:
                if not _payload_matches(body, digest):
                    problems.append(f"{where} does not hash to its digest (the body was changed)")
            elif body != "null":
                problems.append(f"{where} is marked erased but still has a body")
            else:
                erased_rows.append((run_id, digest, where))
        # Reading the erasure events is a pass over run_events: only needed when something was erased.
        named = erasures_in_log(connection) if erased_rows else set()
    uncovered = [(run_id, digest, where) for run_id, digest, where in erased_rows if (run_id, digest) not in named]
    signed = purge_checkpoint_field(report.purge, "erased_before_sha256")
    if report.purge is None:
        problems += [f"{where} was erased without a payload_erased event" for _, _, where in uncovered]
    elif erased_pairs_digest((run, digest) for run, digest, _ in uncovered) != signed:
        problems.append("the erased payloads no payload_erased event names differ from those the purge signed")
    if len(problems) > _LISTED:
        problems = [*problems[:_LISTED], f"and {len(problems) - _LISTED} more payload problems"]
    report.outside.extend(problems)


def erasures_in_log(connection: Connection, after_seq: int = 0) -> set[tuple[str, str]]:
    """(run_id, digest) of every payload a ``payload_erased`` event in the log (after ``after_seq``) names."""
    named: set[tuple[str, str]] = set()
    query = sql_text("SELECT run_id, CAST(data AS TEXT) FROM run_events WHERE event_type = :type AND seq > :after")
    for run_id, data in connection.execute(query, {"type": PAYLOAD_ERASED, "after": after_seq}):
        try:
            named.update((run_id, str(digest)) for digest in json.loads(data)["erasure"]["digests"])
        except (TypeError, ValueError, KeyError):
            continue  # the chain covers the event; a malformed one simply names nothing
    return named


def erased_pairs_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """SHA-256 of the sorted (run_id, digest) pairs, one "run_id newline digest newline" each."""
    return hashlib.sha256("".join(f"{run}\n{digest}\n" for run, digest in sorted(pairs)).encode()).hexdigest()


def erased_before_purge(connection: Connection, through: int) -> str:
    """:func:`erased_pairs_digest` of the erased payloads that no ``payload_erased`` event after ``through``
    names: what a purge through ``through`` signs, so that verify can still account for them once their
    events are gone."""
    named = erasures_in_log(connection, through)
    rows = connection.execute(sql_text("SELECT run_id, digest FROM run_payloads WHERE erased_at IS NOT NULL"))
    return erased_pairs_digest((run, digest) for run, digest in rows if (run, digest) not in named)


def _payload_matches(body: Any, digest: str) -> bool:
    if not isinstance(body, str):
        return False
    if hashlib.sha256(body.encode()).hexdigest() == digest:
        return True
    try:  # the same value in another text (PostgreSQL's json keeps text as given; SQLite too)
        value = strict_json(body)
        return bool(hashlib.sha256(canonical_json(value).encode()).hexdigest() == digest)
    except (TypeError, ValueError):
        return False


def _check_before_anchor(engine: Engine, report: ChainReport, trusted_since: bool) -> None:
    """Rows at or before the anchor: none may remain after a purge; a trusted one must still be itself."""
    seq, hash_ = report.anchor
    if seq == 0:
        return
    with engine.connect() as connection:
        if trusted_since:
            stored = connection.execute(sql_text("SELECT hash FROM run_events WHERE seq = :seq"), {"seq": seq}).all()
            if [row[0] for row in stored] != [hash_]:
                _flag(report, seq, "the event at the checkpoint's seq is not the one the checkpoint signed")
            return
        remaining = connection.execute(
            sql_text("SELECT min(seq) FROM run_events WHERE seq <= :seq"), {"seq": seq}
        ).scalar()
    if remaining is not None:
        _flag(report, int(remaining), f"seq {remaining} lies in the range a purge removed (up to seq {seq})")


def _with_anchor(
    bounds: list[tuple[int | None, int | None]], anchor: tuple[int, str]
) -> list[tuple[int | None, int | None, tuple[int, str] | None]]:
    return [(after, upto, anchor if index == 0 else None) for index, (after, upto) in enumerate(bounds)]


# Below this many events one process is quicker than starting others (about 0.3 s each).
PARALLEL_FROM = 300_000


def _ranges(engine: Engine, processes: int, after: int) -> list[tuple[int | None, int | None]]:
    """(after, up to) ``seq`` bounds that split the log after ``after`` in ``processes`` ranges."""
    url = engine.url
    # From genesis, the first range has no lower bound, so that a row with a seq below 1 is seen too.
    start = None if after == 0 else after
    if processes < 2 or (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")):
        return [(start, None)]
    with engine.connect() as connection:
        count, high = connection.execute(
            sql_text("SELECT count(*), max(seq) FROM run_events WHERE seq > :after"), {"after": after}
        ).one()
    if count < PARALLEL_FROM:
        return [(start, None)]
    cuts = [after + (high - after) * index // processes for index in range(1, processes)]
    return list(zip([start, *cuts], [*cuts, None], strict=True))


def _run_worker(url: str, after: int | None, upto: int | None, anchor: tuple[int, str] | None) -> _Segment:
    """Check one range in a fresh interpreter (``python -m tracker.store.audit``).

    A new interpreter rather than multiprocessing: nothing is inherited (connections, threads) and the
    caller's main module needs no ``if __name__ == "__main__"`` guard. The database URL, password
    included, goes through a pipe, never the command line (which other users can read).
    """
    request = json.dumps({"url": url, "after": after, "upto": upto, "anchor": anchor})
    worker = subprocess.run(
        [sys.executable, "-m", "tracker.store.audit"], input=request, capture_output=True, text=True, check=False
    )
    if worker.returncode != 0:
        last_line = (worker.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"a verification worker failed (exit {worker.returncode}): {last_line}")
    found = json.loads(worker.stdout)
    segment = _Segment(events=found["events"])
    if found["first"] is not None:
        segment.first = (found["first"][0], found["first"][1])
        segment.last = (found["last"][0], found["last"][1])
    segment.problems.first_bad_seq = found["first_bad_seq"]
    segment.problems.problem = found["problem"]
    segment.problems.gaps = [(low, high) for low, high in found["gaps"]]
    return segment


def _worker_main() -> None:
    """The worker's side of :func:`_start_worker`: a JSON request on stdin, a JSON segment on stdout."""
    request = json.load(sys.stdin)
    engine = create_engine(request["url"])
    try:
        with fewer_gc_passes():
            anchor = request["anchor"]
            segment = _check_range(engine, request["after"], request["upto"], None if anchor is None else tuple(anchor))
    finally:
        engine.dispose()
    json.dump(
        {
            "events": segment.events,
            "first": segment.first,
            "last": segment.last,
            "first_bad_seq": segment.problems.first_bad_seq,
            "problem": segment.problems.problem,
            "gaps": segment.problems.gaps,
        },
        sys.stdout,
    )


def _check_range(engine: Engine, after: int | None, upto: int | None, anchor: tuple[int, str] | None) -> _Segment:
    """The rows with ``after < seq <= upto``; only the first range knows what its first row must link to
    (``anchor``: the seq and hash just before it)."""

    def exact(seq: int, prev_hash: str, hash_: str) -> bool:
        return _stored_rows_hash(engine, seq, prev_hash, hash_)

    if anchor is None:
        return _check(_pages_in_order(engine, after, upto), None, None, exact)
    return _check(_pages_in_order(engine, after, upto), anchor[1], anchor[0] + 1, exact)


# A row of _pages_in_order: seq, prev_hash, hash, the body text up to observed_at's value, then
# observed_at, occurred_at, recorded_at (numbers on SQLite, canonical text on PostgreSQL), then the rest.
_Row = tuple[int, str, str, str, Any, Any, Any, str]


@dataclass
class _Segment:
    """What checking a run of consecutive rows found, and its ends, to link it to its neighbours."""

    events: int = 0
    first: tuple[int, str] | None = None  # (seq, prev_hash) of its first row
    last: tuple[int, str] | None = None  # (seq, hash) of its last row
    problems: ChainReport = field(default_factory=ChainReport)


def _check(
    pages: Iterator[list[_Row]],
    expected_prev: str | None,
    expected_seq: int | None,
    exact: Callable[[int, str, str], bool],
) -> _Segment:
    """Check rows in order; the first row's link is checked only against given expectations.

    ``exact(seq, prev_hash, hash)`` decides a row whose assembled text does not hash (see
    :func:`_stored_rows_hash`).
    """
    segment = _Segment()
    report = segment.problems
    sha256 = hashlib.sha256
    for page in pages:
        if segment.first is None:
            segment.first = (page[0][0], page[0][1])
        for seq, prev_hash, hash_, head, observed, occurred, recorded, tail in page:
            # The body's three times sit together in canonical key order (tracker.events.body_json).
            body_text = f'{head}{observed},"occurred_at":{occurred},"recorded_at":{recorded}{tail}'
            if expected_seq is not None:
                _check_link(report, seq, prev_hash, expected_seq, expected_prev)
            if sha256(f"{prev_hash}\n{body_text}".encode()).hexdigest() != hash_ and not exact(seq, prev_hash, hash_):
                _flag(report, seq, "hash does not match the event's content")
            expected_prev = hash_
            expected_seq = seq + 1
        segment.events += len(page)
        segment.last = (page[-1][0], page[-1][2])
    return segment


def _check_link(report: ChainReport, seq: int, prev_hash: str, expected_seq: int, expected_prev: str | None) -> None:
    if seq != expected_seq:
        if seq > expected_seq:
            report.gaps.append((expected_seq, seq - 1))
            _flag(report, seq, f"seq {expected_seq}..{seq - 1} missing")
        else:
            _flag(report, seq, f"seq {seq} appears more than once")
    if prev_hash != expected_prev:
        _flag(report, seq, "prev_hash does not match the hash of the event before it")


def _merge(segments: list[_Segment]) -> ChainReport:
    """One report from consecutive segments, as one pass over all their rows would have made it."""
    report = ChainReport()
    last: tuple[int, str] | None = None
    for segment in segments:
        if segment.first is None:
            continue
        if last is not None:
            _check_link(report, segment.first[0], segment.first[1], last[0] + 1, last[1])
        if segment.problems.first_bad_seq is not None:
            _flag(report, segment.problems.first_bad_seq, segment.problems.problem or "")
        report.gaps.extend(segment.problems.gaps)
        report.events += segment.events
        last = segment.last
    if last is not None:
        report.head_seq, report.head_hash = last
    return report


def _stored_rows_hash(engine: Engine, seq: int, prev_hash: str, hash_: str) -> bool:
    """The slow, exact check for a row whose assembled body text did not hash.

    The database may write a value differently from canonical JSON (PostgreSQL's text for a huge or tiny
    time, escapes of control characters in stored text), so the row's own columns are read again and
    its body rebuilt from them, strictly (:func:`tracker.events.stored_body`): never by parsing the
    assembled text, where a key repeated inside ``source`` or ``data`` would let a lenient parser read
    back other values than the columns hold. Every row at that (seq, prev_hash, hash) must pass.
    """
    query = sql_text(
        "SELECT seq, kind, run_id, thread_id, version, event_type, occurred_at, observed_at, recorded_at, "
        "CAST(data AS TEXT), CAST(source AS TEXT) FROM run_events "
        "WHERE seq = :seq AND prev_hash = :prev AND hash = :hash"
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"seq": seq, "prev": prev_hash, "hash": hash_}).all()
    if not rows:
        return False
    for row in rows:
        body = stored_body(*row)
        try:
            if body is None or chain_hash(prev_hash, body) != hash_:
                return False
        except (TypeError, ValueError):
            return False
    return True


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
        ("source", "CAST(source AS TEXT)" if dialect == "postgresql" else "source"),
        # Null for kinds without a group (batches, responses, fine-tuning jobs).
        ("thread_id", f"COALESCE({string.format(c='thread_id')}, 'null')"),
        ("version", "CAST(version AS TEXT)"),
    ]
    head_sql = "'{' || " + " || ',' || ".join(f"""'"{key}":' || {sql}""" for key, sql in head)
    tail_sql = " || ".join(f"""',"{key}":' || {sql}""" for key, sql in tail) + " || '}'"
    times = ", ".join(time.format(c=name) for name in ("observed_at", "occurred_at", "recorded_at"))
    return f"""{head_sql} || ',"observed_at":', {times}, {tail_sql}"""


def _pages_in_order(engine: Engine, after: int | None, upto: int | None) -> Iterator[list[_Row]]:
    """Pages of :data:`_Row` in ``seq`` order, from one ordered query, for ``after < seq <= upto``.

    On PostgreSQL a worker thread fetches the next page while the caller hashes this one, so the server
    assembles text while Python hashes. SQLite works in this process, where a second thread only
    contends for the GIL (measured: 15 % slower), so it is read directly.
    """
    dialect = engine.dialect.name
    bounds = [f"seq > {int(after)}"] if after is not None else []
    bounds += [f"seq <= {int(upto)}"] if upto is not None else []
    where = f"WHERE {' AND '.join(bounds)} " if bounds else ""
    # Rows that share a seq (possible only once the primary key is dropped) come in hash order, so that
    # every verification, in one range or several, gives the same report.
    query = f"SELECT seq, prev_hash, hash, {_body_sql(dialect)} FROM run_events {where}ORDER BY seq, hash"
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


if __name__ == "__main__":
    _worker_main()
