"""Two OS processes appending to the same database at the same time, on both databases.

Whatever the interleaving, the ledger must end up as if the snapshots had been ingested one file
after the other: no duplicate ``(run_id, version)``, ``seq`` gap-free from 1, an intact chain,
projections equal to a rebuild, and the very same events (per run and version) as one sequential
ingest of the union into a fresh database. Envelopes carry explicit ``observed_at`` times
(:func:`tracker.synthetic.snapshot_stream`), so that result does not depend on the clock.

Two flavours: the real CLI (``tracker --database-url URL ingest FILE``) run twice as subprocesses,
and two ``multiprocessing`` workers released together by a barrier and ingesting in small batches, so
that their write transactions are many and certainly contend for the append lock.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from tests.conftest import fresh_postgres_url
from tracker.ingest import ingest_lines
from tracker.store import open_database, projections
from tracker.store.audit import verify_chain
from tracker.store.schema import run_events
from tracker.synthetic import snapshot_stream

TRACKER = Path(sys.executable).with_name("tracker")
NOW = 1_800_000_000.0


def _now() -> float:
    return NOW


@pytest.fixture
def reference(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A second fresh database on the same backend, for the sequential ingest to compare with."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'reference.db'}"
    else:
        url = fresh_postgres_url(request.getfixturevalue("postgres"))
    engine = open_database(url)
    yield engine
    engine.dispose()


def _envelopes(runs: int, seed: int) -> list[dict[str, Any]]:
    return list(snapshot_stream(runs, seed=seed, overlap=25))


def _run_index(envelope: dict[str, Any]) -> int:
    return int(envelope["run"]["id"].removeprefix("run_"))


def _write(path: Path, envelopes: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(envelope) + "\n" for envelope in envelopes), encoding="utf-8")
    return path


def _split(tmp_path: Path, runs: int, seed: int) -> tuple[Path, Path, Path]:
    """Files A (runs 0..2/3) and B (runs 1/3..end), sharing the middle third, and their union."""
    envelopes = _envelopes(runs, seed)
    a = [e for e in envelopes if _run_index(e) < 2 * runs // 3]
    b = [e for e in envelopes if _run_index(e) >= runs // 3]
    return _write(tmp_path / "a.jsonl", a), _write(tmp_path / "b.jsonl", b), _write(tmp_path / "union.jsonl", envelopes)


def _ingest_sequentially(engine: Engine, path: Path) -> int:
    with path.open("rb") as lines:
        return ingest_lines(engine, lines, _now, source={"ingest": "test"}).events_appended


def _events(engine: Engine) -> dict[tuple[str, int], tuple[Any, ...]]:
    """Each event by (run_id, version), without what depends on timing (seq, recorded_at, hashes)."""
    columns = run_events.c
    query = select(
        columns.run_id,
        columns.version,
        columns.kind,
        columns.thread_id,
        columns.event_type,
        columns.occurred_at,
        columns.observed_at,
        columns.data,
    )
    with engine.connect() as connection:
        return {(row.run_id, row.version): tuple(row)[2:] for row in connection.execute(query)}


def _assert_consistent(engine: Engine) -> int:
    """The invariants of a ledger after concurrent writers; returns the number of events."""
    with engine.connect() as connection:
        duplicates = connection.execute(
            text("SELECT run_id, version FROM run_events GROUP BY run_id, version HAVING COUNT(*) > 1")
        ).all()
        count, low, high = connection.execute(text("SELECT COUNT(*), MIN(seq), MAX(seq) FROM run_events")).one()
        ragged = connection.execute(
            text("SELECT run_id FROM run_events GROUP BY run_id HAVING COUNT(*) <> MAX(version) OR MIN(version) <> 1")
        ).all()
    assert duplicates == []
    assert (low, high) == (1, count), "seq is not gap-free from 1"
    assert ragged == [], "a run's versions are not 1..n"
    report = verify_chain(engine)
    assert report.ok, report
    drift = projections.verify_rebuild(engine)
    assert drift.clean, drift
    return int(count)


def _assert_same_as_sequential(engine: Engine, reference: Engine, union: Path) -> None:
    expected = _ingest_sequentially(reference, union)
    assert _assert_consistent(engine) == expected
    assert _events(engine) == _events(reference)


# --- the CLI, twice at once --------------------------------------------------------------------------


def _tracker_ingest(url: str, path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(TRACKER), "--database-url", url, "ingest", "--json", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_together(url: str, *paths: Path) -> list[dict[str, Any]]:
    """Start one ``tracker ingest`` per path at once; wait for all of them before judging any."""
    processes = [_tracker_ingest(url, path) for path in paths]
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=120))
        except subprocess.TimeoutExpired:
            process.kill()
            outputs.append(process.communicate())
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    return [json.loads(stdout) for stdout, _ in outputs]


def test_overlapping_files_ingested_by_two_processes_at_once(
    engine: Engine, db_url: str, reference: Engine, tmp_path: Path
) -> None:
    a, b, union = _split(tmp_path, runs=150, seed=21)
    summaries = _run_together(db_url, a, b)
    assert [summary["rejected"] for summary in summaries] == [0, 0]
    _assert_same_as_sequential(engine, reference, union)
    assert sum(summary["events_appended"] for summary in summaries) == len(_events(engine))


def test_same_file_ingested_twice_at_once_appends_each_event_once(
    engine: Engine, db_url: str, reference: Engine, tmp_path: Path
) -> None:
    _, _, union = _split(tmp_path, runs=120, seed=22)
    summaries = _run_together(db_url, union, union)
    _assert_same_as_sequential(engine, reference, union)
    assert sum(summary["events_appended"] for summary in summaries) == len(_events(engine))


# --- two workers released together, many small transactions -----------------------------------------


def _worker(url: str, path: str, writer: int, batch_size: int, barrier: Any) -> None:
    """Ingest ``path`` in small batches; ``recorded_at`` is the writer's number, to tell writers apart."""
    engine = open_database(url)
    try:
        lines = Path(path).read_bytes().splitlines(keepends=True)
        barrier.wait(timeout=60)
        ingest_lines(engine, lines, lambda: float(writer), batch_size=batch_size, source={"ingest": "test"})
    finally:
        engine.dispose()


def test_writers_released_together_in_small_batches(
    engine: Engine, db_url: str, reference: Engine, tmp_path: Path
) -> None:
    a, b, union = _split(tmp_path, runs=70, seed=23)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_worker, args=(db_url, str(path), writer, 10, barrier))
        for writer, path in ((1, a), (2, b))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:  # wait for both before judging either
        worker.join(timeout=120)
        if worker.exitcode is None:
            worker.kill()
            worker.join()
    exit_codes = [worker.exitcode for worker in workers]
    for worker in workers:
        worker.close()
    assert exit_codes == [0, 0]
    _assert_same_as_sequential(engine, reference, union)

    # Both writers appended (recorded_at tells them apart). How often the lock changed hands is not
    # asserted: PostgreSQL's advisory lock queues waiters and alternates them (~50 switches here), while
    # SQLite's busy handler polls with back-off and often lets one writer finish first (1-3 switches).
    with engine.connect() as connection:
        writers = set(connection.execute(select(run_events.c.recorded_at)).scalars())
    assert writers == {1.0, 2.0}
