"""``verify_chain`` / ``tracker audit verify`` against an attacker who owns the database.

The attacker model: whoever can drop the append-only guards (SQLite: ``DROP TRIGGER``; PostgreSQL: a
superuser's ``ALTER TABLE run_events DISABLE TRIGGER ALL``) can rewrite rows at will. The hash chain
must then point at the first ``seq`` that was touched. Each test tampers with a freshly ingested log
and checks ``first_bad_seq`` exactly, not just "something is wrong".

What the chain alone cannot detect, asserted as such below: cutting off the tail, and appending
an event whose hash the attacker computed correctly (both look like a shorter or longer honest log;
an externally kept checkpoint of ``head_seq``/``head_hash`` is what closes that gap).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, delete, event, select, text

from tracker.cli import cli
from tracker.events import EVENT_TYPES, GENESIS_HASH, EventDraft, seal
from tracker.ingest import ingest_lines
from tracker.store import audit
from tracker.store.audit import ChainReport, verify_chain
from tracker.store.ledger import event_row
from tracker.store.schema import EVENT_COLUMNS, run_events
from tracker.synthetic import snapshot_stream

NOW = 1_800_000_000.0
SQLITE_GUARDS = ("trg_run_events_no_update", "trg_run_events_no_delete", "trg_run_events_no_replace")
HASHED = (
    "kind", "run_id", "thread_id", "version", "event_type", "occurred_at", "observed_at", "recorded_at", "data",
    "source",
)  # fmt: skip

Row = dict[str, Any]


def _ingest(engine: Engine, runs: int, seed: int) -> int:
    lines = [json.dumps(record).encode() for record in snapshot_stream(runs, seed=seed)]
    return ingest_lines(engine, lines, lambda: NOW, source={"ingest": "test"}).events_appended


@pytest.fixture
def log(engine: Engine) -> int:
    """A freshly ingested, intact log; returns its number of events."""
    count = _ingest(engine, 5, seed=5)
    assert count >= 30
    return count


# --- the attacker's tools ----------------------------------------------------------------------------


def _unguard(connection: Connection) -> None:
    """Switch the append-only guards off, as the owner of the database can."""
    if connection.dialect.name == "sqlite":
        for trigger in SQLITE_GUARDS:
            connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
    else:
        connection.exec_driver_sql("ALTER TABLE run_events DISABLE TRIGGER ALL")


def _drop_unique(connection: Connection) -> None:
    """Remove the primary key on seq and the unique (run_id, version), so rows can be duplicated."""
    if connection.dialect.name == "sqlite":
        # SQLite cannot drop a constraint: rebuild the table without any (its triggers go with it).
        connection.exec_driver_sql("CREATE TABLE run_events_loose AS SELECT * FROM run_events")
        connection.exec_driver_sql("DROP TABLE run_events")
        connection.exec_driver_sql("ALTER TABLE run_events_loose RENAME TO run_events")
    else:
        connection.exec_driver_sql("ALTER TABLE run_events DROP CONSTRAINT uq_run_events_run_id_version")
        connection.exec_driver_sql("ALTER TABLE run_events DROP CONSTRAINT pk_run_events")


def _tamper(engine: Engine, attack: Callable[[Connection], None], *, loose: bool = False) -> None:
    with engine.begin() as connection:
        _unguard(connection)
        if loose:
            _drop_unique(connection)
        attack(connection)


def _unguarded_copy(engine: Engine, *, loose: bool = False) -> list[Row]:
    """Switch the guards off for good and return the intact log's rows, for :func:`_restore`."""
    with engine.begin() as connection:
        rows = _rows(connection)
        _unguard(connection)
        if loose:
            _drop_unique(connection)
    return rows


def _restore(engine: Engine, rows: list[Row]) -> None:
    """Re-create the intact log (on a database whose guards are off)."""
    with engine.begin() as connection:
        connection.execute(delete(run_events))
        connection.execute(run_events.insert(), rows)
    assert verify_chain(engine).ok


def _rows(connection: Connection) -> list[Row]:
    return [dict(row._mapping) for row in connection.execute(select(run_events).order_by(run_events.c.seq))]


def _row(connection: Connection, seq: int) -> Row:
    return dict(connection.execute(select(run_events).where(run_events.c.seq == seq)).one()._mapping)


def _set(connection: Connection, at: int, /, **values: Any) -> None:
    """Overwrite columns of the event at seq ``at`` (``seq`` itself included)."""
    connection.execute(run_events.update().where(run_events.c.seq == at).values(**values))


def _delete(connection: Connection, first: int, last: int | None = None) -> None:
    last = first if last is None else last
    connection.execute(delete(run_events).where(run_events.c.seq.between(first, last)))


def _open_slot(connection: Connection, at: int) -> None:
    """Shift every event from ``at`` on up by one seq (in two steps: seq is a primary key)."""
    connection.execute(run_events.update().where(run_events.c.seq >= at).values(seq=-run_events.c.seq))
    connection.execute(run_events.update().where(run_events.c.seq < 0).values(seq=-run_events.c.seq + 1))


def _swap(connection: Connection, first: int, second: int) -> None:
    _set(connection, first, seq=-1)
    _set(connection, second, seq=first)
    _set(connection, -1, seq=second)


def _forged(connection: Connection, seq: int) -> Row:
    """A new event for a new run placed at ``seq``, chained after ``seq - 1`` with a correct hash."""
    prev_hash = GENESIS_HASH if seq == 1 else _row(connection, seq - 1)["hash"]
    draft = EventDraft(
        kind="thread.run",
        run_id="run_forged",
        thread_id="thread_forged",
        version=1,
        event_type="first_seen",
        occurred_at=1_767_225_600.0,
        observed_at=1_767_225_601.0,
        data={"fields": {"id": "run_forged", "created_at": 1_767_225_600}},
    )
    event = seal(draft, seq, NOW, prev_hash, '{"ingest":"test"}')
    # event_row gives the data column's text; a SQLAlchemy insert into the JSON column takes the value.
    row = dict(zip(EVENT_COLUMNS, event_row(event), strict=True))
    return {**row, "data": event.data, "source": json.loads(event.source)}


def _altered(row: Row, column: str) -> Any:
    """A value for ``column`` that differs from the row's (after canonical JSON, too)."""
    value = row[column]
    if column in ("data", "source"):
        return {**value, "tampered": True}
    if column in ("occurred_at", "observed_at", "recorded_at"):
        return value + 1.5
    if column == "version":
        return value + 1000
    if column == "event_type":
        return next(kind for kind in sorted(EVENT_TYPES) if kind != value)
    if column in ("prev_hash", "hash"):
        return ("1" if value[0] == "0" else "0") + value[1:]
    return value + "_x"


# --- intact ------------------------------------------------------------------------------------------


def test_intact_log_verifies(engine: Engine, log: int) -> None:
    report = verify_chain(engine)
    assert report.ok
    assert (report.events, report.head_seq) == (log, log)
    assert (report.first_bad_seq, report.problem, report.gaps) == (None, None, [])
    with engine.connect() as connection:
        assert report.head_hash == _row(connection, log)["hash"]


def test_empty_log_verifies(engine: Engine) -> None:
    report = verify_chain(engine)
    assert report.ok
    assert (report.events, report.head_seq, report.head_hash) == (0, 0, GENESIS_HASH)


def test_log_grown_by_later_ingests_verifies(engine: Engine, log: int) -> None:
    more = _ingest(engine, 8, seed=6)  # other runs and seeds: appended after the existing head
    assert more > 0
    report = verify_chain(engine)
    assert report.ok
    assert report.events == log + more


# --- one tampering at a time -------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["data", "occurred_at", "event_type", "run_id"])
def test_modified_event_is_detected(engine: Engine, log: int, column: str) -> None:
    target = log // 2

    def attack(connection: Connection) -> None:
        _set(connection, target, **{column: _altered(_row(connection, target), column)})

    _tamper(engine, attack)
    report = verify_chain(engine)
    assert not report.ok
    assert report.first_bad_seq == target
    assert report.problem == "hash does not match the event's content"
    assert report.gaps == []


def test_every_column_is_covered_by_the_chain(engine: Engine, log: int) -> None:
    # One column at a time on the same log, restored in between (one database keeps this fast).
    original = _unguarded_copy(engine)
    target = log // 3
    missed = []
    for column in (*HASHED, "prev_hash", "hash"):
        _restore(engine, original)

        def attack(connection: Connection, column: str = column) -> None:
            _set(connection, target, **{column: _altered(_row(connection, target), column)})

        with engine.begin() as connection:
            attack(connection)
        report = verify_chain(engine)
        if report.first_bad_seq != target or report.gaps:
            missed.append((column, report))
    assert missed == []


def test_tampering_at_either_end_is_detected(engine: Engine, log: int) -> None:
    original = _unguarded_copy(engine)
    attacks: list[tuple[Callable[[Connection], None], int]] = [
        (lambda connection: _set(connection, 1, occurred_at=0.0), 1),
        (lambda connection: _set(connection, log, data={"fields": {}}), log),
        (lambda connection: _delete(connection, 1), 2),  # the first event gone: gap (1, 1)
    ]
    for attack, expected in attacks:
        _restore(engine, original)
        with engine.begin() as connection:
            attack(connection)
        assert verify_chain(engine).first_bad_seq == expected
    assert verify_chain(engine).gaps == [(1, 1)]


def test_event_deleted_in_the_middle_is_detected(engine: Engine, log: int) -> None:
    target = log // 2
    _tamper(engine, lambda connection: _delete(connection, target))
    report = verify_chain(engine)
    assert not report.ok
    assert report.first_bad_seq == target + 1
    assert report.gaps == [(target, target)]
    assert report.events == log - 1


def test_deleted_tail_is_not_detectable_without_a_checkpoint(engine: Engine, log: int) -> None:
    # Honest current behaviour: the chain only links each event to the one before it, so a log cut
    # short is indistinguishable from a shorter honest log. Only a head (seq, hash) recorded elsewhere
    # beforehand (a checkpoint, not implemented yet) reveals the cut, as the comparison below shows.
    before = verify_chain(engine)
    _tamper(engine, lambda connection: _delete(connection, log - 2, log))
    report = verify_chain(engine)
    assert report.ok
    assert report.first_bad_seq is None
    assert (report.events, report.head_seq) == (log - 3, log - 3)
    assert (report.head_seq, report.head_hash) != (before.head_seq, before.head_hash)


def test_inserted_event_is_detected(engine: Engine, log: int) -> None:
    # The strongest forger: the new event's own hash is right and it links to its predecessor, so the
    # break shows at the event after it (whose seq and prev_hash no longer fit).
    target = log // 2

    def attack(connection: Connection) -> None:
        forged = _forged(connection, target)
        _open_slot(connection, target)
        connection.execute(run_events.insert(), [forged])

    _tamper(engine, attack)
    report = verify_chain(engine)
    assert report.first_bad_seq == target + 1
    assert report.gaps == []
    assert report.events == log + 1


def test_inserted_event_with_a_wrong_hash_is_detected_at_itself(engine: Engine, log: int) -> None:
    target = log // 2

    def attack(connection: Connection) -> None:
        forged = {**_forged(connection, target), "hash": "f" * 64}
        _open_slot(connection, target)
        connection.execute(run_events.insert(), [forged])

    _tamper(engine, attack)
    assert verify_chain(engine).first_bad_seq == target


def test_appended_event_with_a_wrong_hash_is_detected(engine: Engine, log: int) -> None:
    def attack(connection: Connection) -> None:
        connection.execute(run_events.insert(), [{**_forged(connection, log + 1), "prev_hash": "e" * 64}])

    _tamper(engine, attack)
    assert verify_chain(engine).first_bad_seq == log + 1


def test_appended_event_with_a_correct_hash_is_not_detectable(engine: Engine, log: int) -> None:
    # Honest current behaviour: a forger who recomputes the hash extends the chain like an ingest would.
    _tamper(engine, lambda connection: connection.execute(run_events.insert(), [_forged(connection, log + 1)]))
    report = verify_chain(engine)
    assert report.ok
    assert report.head_seq == log + 1


@pytest.mark.parametrize("where", ["middle", "end"])
def test_duplicated_event_is_detected(engine: Engine, log: int, where: str) -> None:
    source = log // 3
    position = log // 2 if where == "middle" else log + 1

    def attack(connection: Connection) -> None:
        copy = {**_row(connection, source), "seq": position}  # same content, new seq
        if position <= log:
            _open_slot(connection, position)
        connection.execute(run_events.insert(), [copy])

    _tamper(engine, attack, loose=True)
    report = verify_chain(engine)
    assert report.first_bad_seq == position
    assert report.gaps == []
    with engine.connect() as connection:
        duplicates = connection.execute(
            text("SELECT COUNT(*) FROM run_events GROUP BY run_id, version HAVING COUNT(*) > 1")
        ).all()
    assert len(duplicates) == 1


@pytest.mark.parametrize("distance", [1, 7])
def test_swapped_events_are_detected(engine: Engine, log: int, distance: int) -> None:
    first = log // 3
    _tamper(engine, lambda connection: _swap(connection, first, first + distance))
    report = verify_chain(engine)
    assert report.first_bad_seq == first
    assert report.gaps == []
    assert report.events == log


def test_seq_gaps_are_all_reported(engine: Engine, log: int) -> None:
    def attack(connection: Connection) -> None:
        _delete(connection, 5, 7)
        _delete(connection, 12)
        _delete(connection, log - 3)

    _tamper(engine, attack)
    report = verify_chain(engine)
    assert report.first_bad_seq == 8
    assert report.problem == "seq 5..7 missing"
    assert report.gaps == [(5, 7), (12, 12), (log - 3, log - 3)]
    assert report.events == log - 5


def test_repeated_seq_is_detected_without_a_bogus_gap(engine: Engine, log: int) -> None:
    # With the primary key dropped, a second row can claim an existing seq (here: a forged event).
    target = log // 2

    def attack(connection: Connection) -> None:
        connection.execute(run_events.insert(), [_forged(connection, target)])

    _tamper(engine, attack, loose=True)
    report = verify_chain(engine)
    assert not report.ok
    assert report.first_bad_seq == target
    assert report.problem == f"seq {target} appears more than once"
    assert report.gaps == []  # nothing is missing: one seq is there twice
    assert report.events == log + 1


@pytest.mark.parametrize("page", [4, 5])
def test_repeated_seq_across_a_page_boundary_is_not_skipped(
    engine: Engine, log: int, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The log is read in pages of audit._PAGE rows (20,000); shrunk here so that the two rows with
    # seq 4 straddle a page boundary. A reader that resumes at "seq > last" would never see the second.
    monkeypatch.setattr(audit, "_PAGE", page)

    def attack(connection: Connection) -> None:
        connection.execute(run_events.insert(), [{**_forged(connection, 4), "occurred_at": 0.0}])

    _tamper(engine, attack, loose=True)
    report = verify_chain(engine)
    assert not report.ok
    assert report.first_bad_seq == 4
    assert report.events == log + 1


def test_seq_renumbered_to_close_a_gap_is_detected(engine: Engine, log: int) -> None:
    # Deleting an event and moving the later ones down hides the gap, not the broken links.
    target = log // 2

    def attack(connection: Connection) -> None:
        _delete(connection, target)
        connection.execute(run_events.update().where(run_events.c.seq > target).values(seq=-run_events.c.seq))
        connection.execute(run_events.update().where(run_events.c.seq < 0).values(seq=-run_events.c.seq - 1))

    _tamper(engine, attack)
    report = verify_chain(engine)
    assert report.gaps == []
    assert report.first_bad_seq == target


# --- the hashed text: assembled by the database, recomputed exactly when it is not canonical -----------


def _mark(connection: Connection) -> str:
    return "?" if connection.dialect.name == "sqlite" else "%s"


def _data_text(connection: Connection, seq: int) -> str:
    """The ``data`` column of the event at ``seq`` as the database stores it (text, not decoded)."""
    query = f"SELECT CAST(data AS TEXT) FROM run_events WHERE seq = {_mark(connection)}"
    return str(connection.exec_driver_sql(query, (seq,)).scalar_one())


def _set_data_text(connection: Connection, seq: int, data: str) -> None:
    """Store ``data`` in the ``data`` column of the event at ``seq`` exactly as written."""
    mark = _mark(connection)
    value = mark if connection.dialect.name == "sqlite" else f"CAST({mark} AS json)"
    connection.exec_driver_sql(f"UPDATE run_events SET data = {value} WHERE seq = {mark}", (data, seq))


def test_honest_rows_verify_on_the_text_the_database_assembles(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Strings JSON must escape, non-ASCII text and times with milliseconds: the body text built in SQL is the
    # canonical one, so no honest row needs the exact (slow) recomputation.
    texts = ["plain", 'quote " backslash \\ slash /', "controls \x01\x1f\t\n\r\x7f", "é 😀 \u2028\u00a0"]
    lines = []
    for index, text_value in enumerate(texts):
        run = {
            "id": f"run_{index} {text_value}",
            "object": "thread.run",
            "thread_id": f"thread {text_value}",
            "created_at": 1_767_225_600 + index,
            "status": "in_progress",
            "started_at": 1_767_225_601.25 + index,
            "x_text": text_value,
            "x_numbers": [0.1, 1e-7, 123456.789, 2**63, -3],
        }
        lines.append(json.dumps({"observed_at": 1_767_225_610.123 + index, "run": run}).encode())
    assert ingest_lines(engine, lines, lambda: NOW + 0.5, source={"ingest": "test"}).events_appended == 3 * len(texts)
    exact_checks: list[int] = []
    exact = audit._stored_rows_hash

    def counted(engine: Engine, seq: int, *args: Any) -> bool:
        exact_checks.append(seq)
        return exact(engine, seq, *args)

    monkeypatch.setattr(audit, "_stored_rows_hash", counted)
    report = verify_chain(engine)
    assert report.ok, report
    assert report.events == 3 * len(texts)
    assert exact_checks == []


def test_the_same_data_in_another_text_still_verifies(engine: Engine, log: int) -> None:
    # Not canonical text (indented, keys unsorted) for the very same value: the exact recomputation
    # from the row's own values still finds the stored hash.
    target = log // 2

    def attack(connection: Connection) -> None:
        data = json.loads(_data_text(connection, target))
        _set_data_text(connection, target, json.dumps(dict(reversed(data.items())), indent=2))

    _tamper(engine, attack)
    with engine.connect() as connection:
        assert "\n" in _data_text(connection, target)
    report = verify_chain(engine)
    assert report.ok, report
    assert report.events == log


def test_changed_data_in_another_text_is_detected(engine: Engine, log: int) -> None:
    target = log // 2

    def attack(connection: Connection) -> None:
        data = json.loads(_data_text(connection, target))
        _set_data_text(connection, target, json.dumps({**data, "tampered": True}, indent=2))

    _tamper(engine, attack)
    report = verify_chain(engine)
    assert report.first_bad_seq == target
    assert report.problem == "hash does not match the event's content"
    assert report.gaps == []


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL's json column refuses text that is not JSON
def test_sqlite_data_that_is_not_json_is_detected(engine: Engine, log: int) -> None:
    target = log // 2
    _tamper(engine, lambda connection: _set_data_text(connection, target, "not json {"))
    report = verify_chain(engine)
    assert report.first_bad_seq == target
    assert report.problem == "hash does not match the event's content"


# --- randomized mutations ----------------------------------------------------------------------------

MUTATIONS = ("modify", "delete", "insert", "insert_sloppy", "duplicate", "repeat_seq", "swap", "append_sloppy")
MUTATION_COUNT = 30


def _mutate(connection: Connection, rng: random.Random, kind: str, size: int) -> tuple[int, list[tuple[int, int]]]:
    """Apply one random mutation; returns the first bad seq and the gaps verify must report."""
    if kind == "modify":
        target = rng.randint(1, size)
        column = rng.choice([*HASHED, "prev_hash", "hash"])
        _set(connection, target, **{column: _altered(_row(connection, target), column)})
        return target, []
    if kind == "delete":  # never the tail: undetectable by design (see the test above)
        first = rng.randint(1, size - 1)
        last = rng.randint(first, min(size - 1, first + 3))
        _delete(connection, first, last)
        return last + 1, [(first, last)]
    if kind in ("insert", "insert_sloppy"):
        target = rng.randint(1, size)
        forged = _forged(connection, target)
        if kind == "insert_sloppy":
            forged["hash"] = f"{rng.getrandbits(256):064x}"
        _open_slot(connection, target)
        connection.execute(run_events.insert(), [forged])
        return (target if kind == "insert_sloppy" else target + 1), []
    if kind == "duplicate":
        source = rng.randint(1, size)
        position = rng.randint(1, size + 1)
        copy = {**_row(connection, source), "seq": position}
        if position <= size:
            _open_slot(connection, position)
        connection.execute(run_events.insert(), [copy])
        # A copy put back at its own seq is the original; the break is then the shifted original.
        return (position + 1 if position == source else position), []
    if kind == "repeat_seq":  # a second row with an existing seq (the primary key is gone)
        source = rng.randint(1, size)
        target = rng.randint(1, size)
        connection.execute(run_events.insert(), [{**_row(connection, source), "seq": target}])
        return target, []
    if kind == "swap":
        first, second = sorted(rng.sample(range(1, size + 1), 2))
        _swap(connection, first, second)
        return first, []
    forged = {**_forged(connection, size + 1), "occurred_at": rng.uniform(0, NOW)}  # append_sloppy
    connection.execute(run_events.insert(), [forged])
    return size + 1, []


def _in_ranges(engine: Engine, ranges: int, monkeypatch: pytest.MonkeyPatch) -> ChainReport:
    """The parallel verification's answer, its ranges checked one after another in this process."""
    with monkeypatch.context() as patch:
        patch.setattr(audit, "PARALLEL_FROM", 0)
        bounds = audit._ranges(engine, ranges, 0)
    assert len(bounds) == ranges
    return audit._merge(
        [
            audit._check_range(engine, after, upto, (0, GENESIS_HASH) if index == 0 else None)
            for index, (after, upto) in enumerate(bounds)
        ]
    )


def test_random_mutations_are_all_detected(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    size = _ingest(engine, 3, seed=17)
    original = _unguarded_copy(engine, loose=True)
    rng = random.Random(20_260_101)
    kinds = [MUTATIONS[i % len(MUTATIONS)] for i in range(MUTATION_COUNT)]
    rng.shuffle(kinds)
    missed: list[tuple[int, str, ChainReport, int]] = []
    for number, kind in enumerate(kinds):
        _restore(engine, original)
        with engine.begin() as connection:
            expected, gaps = _mutate(connection, rng, kind, size)
        report = verify_chain(engine)
        if report.ok or report.first_bad_seq != expected or report.gaps != gaps:
            missed.append((number, kind, report, expected))
        # Split in ranges (as a big log is, one process each), the same report, whichever range was hit;
        # in ranges of about one row each, every link is one between two ranges.
        assert _in_ranges(engine, 3, monkeypatch) == report, (number, kind)
        assert _in_ranges(engine, size, monkeypatch) == report, (number, kind)
    assert missed == []


def test_a_big_log_is_verified_in_parallel_processes_with_the_same_report(
    engine: Engine, log: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "PARALLEL_FROM", 0)
    commands: list[list[str]] = []
    run = audit.subprocess.run

    def recorded(argv: list[str], **options: Any) -> Any:
        commands.append(argv)
        return run(argv, **options)

    monkeypatch.setattr(audit.subprocess, "run", recorded)
    intact = verify_chain(engine, processes=1)
    assert commands == []
    assert verify_chain(engine, processes=2) == intact
    assert intact.ok
    # Two worker processes, and the database URL (a password, maybe) went through a pipe, not argv.
    assert len(commands) == 2
    assert all(str(engine.url.database) not in " ".join(argv) for argv in commands)
    _tamper(engine, lambda connection: _set(connection, log - 3, version=99))
    tampered = verify_chain(engine, processes=1)
    assert tampered.first_bad_seq == log - 3
    assert verify_chain(engine, processes=2) == tampered


# --- the command line --------------------------------------------------------------------------------


def _audit(db_url: str, *options: str) -> Any:
    """Run ``tracker audit verify`` in-process, then close the engine the CLI opened.

    The CLI's Context never disposes its engine (see the report): on PostgreSQL its pooled connection
    would be garbage-collected open and psycopg's ResourceWarning would fail a later test. The engine is
    caught through SQLAlchemy's connect event and disposed here; nothing in the CLI is replaced.
    """
    opened: list[Engine] = []

    def remember(connection: Connection) -> None:
        opened.append(connection.engine)

    event.listen(Engine, "engine_connect", remember)
    try:
        return CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify", *options])
    finally:
        event.remove(Engine, "engine_connect", remember)
        for engine in set(opened):
            engine.dispose()


def test_cli_exits_0_on_an_intact_log(engine: Engine, db_url: str, log: int) -> None:
    result = _audit(db_url)
    assert result.exit_code == 0, result.output
    head = verify_chain(engine).head_hash
    assert result.stdout.strip() == f"ok: {log} events, chain intact, head seq {log} hash {head}"
    assert result.stderr == ""


def test_cli_exits_1_naming_the_first_bad_seq(engine: Engine, db_url: str, log: int) -> None:
    target = log // 2
    _tamper(engine, lambda connection: _set(connection, target, occurred_at=1.0))
    result = _audit(db_url)
    assert result.exit_code == 1
    assert f"chain broken at seq {target}: hash does not match" in result.stderr
    assert result.stdout == ""


def test_cli_lists_gaps_on_stderr(engine: Engine, db_url: str, log: int) -> None:
    _tamper(engine, lambda connection: _delete(connection, 4, 6))
    result = _audit(db_url)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "gap: seq 4..6 missing",
        "tracker: error: chain broken at seq 7: seq 4..6 missing",
    ]


@pytest.mark.parametrize("flag", [["--format", "json"], ["--json"]])
def test_cli_json_when_intact(engine: Engine, db_url: str, log: int, flag: list[str]) -> None:
    result = _audit(db_url, *flag)
    assert result.exit_code == 0, result.output
    report = verify_chain(engine)
    assert json.loads(result.stdout) == {
        "ok": True,
        "chain_ok": True,
        "checkpoints": [],
        "purged_through_seq": None,
        "outside_problems": [],
        "events": log,
        "head_seq": log,
        "head_hash": report.head_hash,
        "first_bad_seq": None,
        "problem": None,
        "gaps": [],
    }


def test_cli_json_when_tampered(engine: Engine, db_url: str, log: int) -> None:
    def attack(connection: Connection) -> None:
        _delete(connection, 3)
        _set(connection, 10, event_type="tampered")

    _tamper(engine, attack)
    result = _audit(db_url, "--format", "json")
    assert result.exit_code == 1
    output = json.loads(result.stdout)
    assert output["ok"] is False
    assert output["first_bad_seq"] == 4
    assert output["problem"] == "seq 3..3 missing"
    assert output["gaps"] == [[3, 3]]
    assert output["events"] == log - 1
