"""Reading JSON Lines snapshot files (or stdin) in bounded batches, keeping every bad line.

Each line is read on its own: a bad line is reported with its number and reason (and its raw text,
so ``--rejects`` can save it verbatim) and never stops the good lines around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from tracker.snapshots import Snapshot, SnapshotError, decode_line, read_page_leniently


@dataclass(frozen=True)
class Rejection:
    """A line that was not (entirely) ingested, and why."""

    line_no: int
    reason: str
    raw: bytes  # the line exactly as read, line ending included


@dataclass
class Batch:
    """Up to ``size`` snapshots with the lines read and rejected on the way."""

    snapshots: list[Snapshot] = field(default_factory=list)
    lines: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def read_batches(lines: Iterable[bytes], now: Callable[[], float], size: int = 2000) -> Iterator[Batch]:
    """Group the snapshots of ``lines`` (raw bytes) into batches; blank lines are skipped, not rejected."""
    batch = Batch()
    for line_no, raw in enumerate(lines, start=1):
        batch.lines += 1
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            record = decode_line(line)
            if not isinstance(record, dict):
                raise SnapshotError(f"expected a JSON object, got {type(record).__name__}")
            good, bad = read_page_leniently(record, now())
        except SnapshotError as exc:
            batch.rejections.append(Rejection(line_no, str(exc), raw))
            continue
        batch.snapshots.extend(good)
        if bad:
            batch.rejections.append(Rejection(line_no, "; ".join(str(error) for error in bad), raw))
        if len(batch.snapshots) >= size:
            yield batch
            batch = Batch()
    if batch.lines or batch.snapshots or batch.rejections:
        yield batch
