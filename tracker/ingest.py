"""``ingest``: JSON Lines snapshots -> the ledger, in batches, with a summary of what happened."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine

from tracker.events import source_json
from tracker.gc_tuning import fewer_gc_passes
from tracker.redaction import RedactionPolicy, redact_snapshots, redaction_source
from tracker.sources.jsonl import Rejection, read_batches
from tracker.store.ledger import AppendSummary, append_snapshots


@dataclass
class IngestSummary:
    """Counts for one ingest (the CLI prints them; ``--json`` as one object)."""

    lines_read: int = 0
    snapshots: int = 0
    applied: int = 0
    unchanged: int = 0
    stale: int = 0
    rejected: int = 0
    events_appended: int = 0
    unknown_statuses: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest_lines(
    engine: Engine,
    lines: Iterable[bytes],
    now: Callable[[], float],
    on_reject: Callable[[Rejection], None] = lambda rejection: None,
    batch_size: int = 2000,
    *,
    source: Mapping[str, Any],
    redaction: RedactionPolicy | None = None,
) -> IngestSummary:
    """Apply every good snapshot of ``lines``; each bad line goes to ``on_reject``.

    ``source`` names where the lines come from, e.g. ``{"ingest": "runs.jsonl"}``; every event carries it.
    ``redaction`` is applied to every snapshot before the diff sees it; the source then names its fingerprint.
    """
    stored_source = source_json(redaction_source(redaction, source))
    totals = AppendSummary()
    summary = IngestSummary()
    with fewer_gc_passes():
        for batch in read_batches(lines, now, batch_size):
            summary.lines_read += batch.lines
            for rejection in batch.rejections:
                summary.rejected += 1
                on_reject(rejection)
            if batch.snapshots:
                snapshots = redact_snapshots(redaction, batch.snapshots)
                totals.add(append_snapshots(engine, snapshots, now, stored_source))
    summary.snapshots = totals.snapshots
    summary.applied = totals.applied
    summary.unchanged = totals.unchanged
    summary.stale = totals.stale
    summary.events_appended = totals.events_appended
    summary.unknown_statuses = dict(Counter(totals.unknown_statuses))
    return summary
