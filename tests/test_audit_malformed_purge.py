"""Second review of the audit fixes, item 9: a log_purged event whose through_seq/through_hash are well formed
but whose other fields are not (any role that may append may write it) still crashes `audit verify`'s text
report: _print_report calls report.purge.get('archive', {}).get('file') on a string. Fails on ca4d578.
"""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import Engine, text

from tests.test_adversarial_audit import NOW, _line
from tracker.cli import cli
from tracker.events import LOG_PURGED, source_json
from tracker.ingest import ingest_lines
from tracker.store.engine import begin_write
from tracker.store.ledger import append_ledger_event


def test_a_purge_event_with_a_malformed_archive_is_named_not_a_traceback(engine: Engine, db_url: str) -> None:
    ingest_lines(engine, [_line(1, "queued", 1_767_225_601)], lambda: NOW, source={"ingest": "x"})
    with engine.connect() as connection:
        first = connection.execute(text("SELECT hash FROM run_events WHERE seq = 1")).scalar_one()
    with begin_write(engine) as connection:
        data = {"through_seq": 1, "through_hash": first, "archive": "x", "events_purged": 1}
        append_ledger_event(connection, LOG_PURGED, data, NOW, NOW, source_json({"ingest": "x"}))
    result = CliRunner().invoke(cli, ["--database-url", db_url, "audit", "verify"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
