"""``audit export``: the events of a selection as JSON Lines or CSV, and the manifest an auditor checks
them against with Python's standard library alone (docs/audit.md, "Exports").

Every line carries an event's ``seq``, ``prev_hash``, ``hash`` and ``body``, the canonical JSON text the
hash covers, so that ``sha256(prev_hash + "\\n" + body) == hash`` byte for byte. The body is rebuilt from
the stored columns (:func:`tracker.events.body_json`; the parse-and-serialise recipe of docs/events.md
for a row whose stored text is not canonical), as ``audit verify`` rebuilds it. An export never repairs
anything: a tampered row goes out as stored, fails that check, and is reported in the result. Rows come
from one ordered query, read in pages (a server-side cursor on PostgreSQL), so memory stays flat however
long the log; the file is hashed while it is written. Whether the export is a contiguous piece of the
chain is checked against the log, never assumed from the filters.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

from sqlalchemy import Engine, Select, Text, cast, func, select

from tracker.errors import AuditError
from tracker.events import body_json, canonical_json, hash_text, stored_body
from tracker.signing import SigningKey, sign_document
from tracker.store.audit import latest_purge
from tracker.store.checkpoints import log_id, utc_text
from tracker.store.schema import run_events

FORMAT: Final = "tracker.export/1"
LineFormat = Literal["jsonl", "csv"]
LINE_FORMATS: Final[tuple[LineFormat, ...]] = ("jsonl", "csv")
FIELDS: Final = ("seq", "prev_hash", "hash", "body")

# Rows per fetch; a page of rows and its encoded lines are in memory at once (a few MB).
_PAGE = 5_000
_string: Callable[[str], str] = json.encoder.encode_basestring


class ExportExists(AuditError):
    """The export or manifest file already exists; exports are evidence and never overwritten."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists; exports and manifests are never overwritten")
        self.path = path


@dataclass(frozen=True)
class ExportSelection:
    """Which events to export. Every given criterion must hold; several runs (or threads): any of them.

    ``since``/``until`` bound ``recorded_at`` (the ledger's own clock), ``since`` included, ``until`` not;
    ``from_seq``/``to_seq`` are both included.
    """

    since: float | None = None
    until: float | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    runs: tuple[str, ...] = ()
    threads: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The selection as the manifest records it: times as ISO-8601 UTC text, never as floats."""
        return {
            "since": None if self.since is None else utc_text(self.since),
            "until": None if self.until is None else utc_text(self.until),
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "run": list(self.runs),
            "thread": list(self.threads),
        }


@dataclass
class ExportManifest:
    """What an export wrote: its counts, ends, checksum, and the first event that does not hold, if any."""

    line_format: LineFormat
    selection: ExportSelection
    events: int = 0
    bytes: int = 0
    sha256: str = field(default_factory=lambda: hashlib.sha256().hexdigest())
    first: tuple[int, str, str] | None = None  # seq, prev_hash, hash of the first line
    last: tuple[int, str] | None = None  # seq, hash of the last line
    contiguous: bool = False
    first_bad_seq: int | None = None
    problem: str | None = None

    def flag(self, seq: int, problem: str) -> None:
        if self.first_bad_seq is None:
            self.first_bad_seq, self.problem = seq, problem

    def document(self, file_name: str, log: str | None, exported_at: float) -> dict[str, Any]:
        """The manifest file's content (unsigned). Integers and text only: no float, so the JSON any
        parser writes back with sorted keys is the canonical JSON a signature covers."""
        return {
            "format": FORMAT,
            "file": file_name,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "events": self.events,
            "format_of_lines": self.line_format,
            "selection": self.selection.as_dict(),
            "contiguous": self.contiguous,
            "first_seq": None if self.first is None else self.first[0],
            "last_seq": None if self.last is None else self.last[0],
            "first_prev_hash": None if self.first is None else self.first[1],
            "first_hash": None if self.first is None else self.first[2],
            "last_hash": None if self.last is None else self.last[1],
            "log_id": log,
            "exported_at": utc_text(exported_at),
        }


class _DigestingSink:
    """Writes to ``out`` and keeps the SHA-256 and size of everything written."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.digest.update(data)
        self.size += len(data)


# One exported event: seq, prev_hash, hash, body.
_Line = tuple[int, str, str, str]


def _jsonl(lines: list[_Line]) -> bytes:
    return "".join(
        f'{{"seq":{seq},"prev_hash":{_string(prev)},"hash":{_string(hash_)},"body":{_string(body)}}}\n'
        for seq, prev, hash_, body in lines
    ).encode()


def _csv(lines: list[_Line]) -> bytes:
    buffer = io.StringIO()
    # The csv module's default CRLF (RFC 4180); it also makes the writer quote any CR or LF in a field.
    csv.writer(buffer).writerows(lines)
    return buffer.getvalue().encode()


def export_events(
    engine: Engine, out: BinaryIO, selection: ExportSelection, line_format: LineFormat = "jsonl"
) -> ExportManifest:
    """Write the selected events to ``out`` in ``seq`` order; return what was written (see the module doc)."""
    if line_format not in LINE_FORMATS:
        raise ValueError(f"unknown export format {line_format!r}; expected one of {', '.join(LINE_FORMATS)}")
    sink = _DigestingSink(out)
    encode = _jsonl if line_format == "jsonl" else _csv
    if line_format == "csv":
        sink.write(",".join(FIELDS).encode() + b"\r\n")
    manifest = ExportManifest(line_format, selection)
    consecutive = True
    for page in _pages(engine, selection):
        lines: list[_Line] = []
        for row in page:
            seq, prev_hash, hash_ = int(row[0]), str(row[1]), str(row[2])
            body, intact = _body(row)
            if not intact:
                manifest.flag(seq, "hash does not match the event's content")
            if manifest.last is None:
                manifest.first = (seq, prev_hash, hash_)
            elif seq != manifest.last[0] + 1:
                consecutive = False
                if seq == manifest.last[0]:
                    manifest.flag(seq, f"seq {seq} appears more than once")
            elif prev_hash != manifest.last[1]:
                manifest.flag(seq, "prev_hash does not match the hash of the event before it")
            manifest.last = (seq, hash_)
            lines.append((seq, prev_hash, hash_, body))
        sink.write(encode(lines))
        manifest.events += len(lines)
    manifest.bytes, manifest.sha256 = sink.size, sink.digest.hexdigest()
    if manifest.first is not None and manifest.last is not None and consecutive:
        manifest.contiguous = _rows_between(engine, manifest.first[0], manifest.last[0]) == manifest.events
    return manifest


def _query(selection: ExportSelection) -> Select[Any]:
    c = run_events.c
    # data and source as their stored text (PostgreSQL's json keeps it as given): what the hash covers.
    query = select(
        c.seq, c.prev_hash, c.hash, c.kind, c.run_id, c.thread_id, c.version, c.event_type,
        c.occurred_at, c.observed_at, c.recorded_at, cast(c.data, Text), cast(c.source, Text),
    )  # fmt: skip
    if selection.since is not None:
        query = query.where(c.recorded_at >= selection.since)
    if selection.until is not None:
        query = query.where(c.recorded_at < selection.until)
    if selection.from_seq is not None:
        query = query.where(c.seq >= selection.from_seq)
    if selection.to_seq is not None:
        query = query.where(c.seq <= selection.to_seq)
    if selection.runs:
        query = query.where(c.run_id.in_(selection.runs))
    if selection.threads:
        query = query.where(c.thread_id.in_(selection.threads))
    # Rows sharing a seq (possible only once the primary key is dropped) in hash order, as audit verify.
    return query.order_by(c.seq, c.hash)


def _pages(engine: Engine, selection: ExportSelection) -> Iterator[Sequence[Any]]:
    with engine.connect() as connection:
        result = connection.execution_options(yield_per=_PAGE).execute(_query(selection))
        yield from result.partitions()


def _rows_between(engine: Engine, first: int, last: int) -> int:
    c = run_events.c
    with engine.connect() as connection:
        query = select(func.count()).select_from(run_events).where(c.seq >= first, c.seq <= last)
        return int(connection.execute(query).scalar_one())


def _body(row: Sequence[Any]) -> tuple[str, bool]:
    """The canonical body text of a stored row, and whether it hashes to the row's hash."""
    prev_hash, hash_ = row[1], row[2]
    try:
        text: str | None = body_json(row[0], *row[3:])
    except (TypeError, ValueError):  # a NULL or mistyped column (only in a tampered table)
        text = None
    if text is not None and hash_text(prev_hash, text) == hash_:
        return text, True
    exact = _recipe_body(row)
    if exact is not None and hash_text(prev_hash, exact) == hash_:
        return exact, True
    return exact if exact is not None else str(text), False


def _recipe_body(row: Sequence[Any]) -> str | None:
    """docs/events.md's recipe over the stored values, read strictly (tracker.events.stored_body): what
    decides a row whose stored text is not canonical, as in ``audit verify``."""
    seq, _, _, kind, run_id, thread_id, version, event_type, occurred, observed, recorded, data, source = row
    body = stored_body(seq, kind, run_id, thread_id, version, event_type, occurred, observed, recorded, data, source)
    if body is None:
        return None
    try:
        return canonical_json(body)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ExportFiles:
    """A finished export: where its two files are, the manifest as written, and what the stream found."""

    export: Path
    manifest: Path
    document: dict[str, Any]
    result: ExportManifest


def default_manifest_path(export: Path) -> Path:
    return export.with_name(export.name + ".manifest.json")


def export_to_files(
    engine: Engine,
    path: Path,
    selection: ExportSelection,
    line_format: LineFormat,
    now: Callable[[], float],
    *,
    manifest_path: Path | None = None,
    key: SigningKey | None = None,
) -> ExportFiles:
    """Export to a new file ``path`` and write its manifest (signed with ``key`` if given) beside it.

    Neither file may exist. On any failure the export file is removed, so that a file without its
    manifest is never left looking finished.
    """
    manifest_path = default_manifest_path(path) if manifest_path is None else manifest_path
    if manifest_path.absolute() == path.absolute():
        raise AuditError(f"{path}: the manifest cannot be the export file itself")
    for existing in (path, manifest_path):
        if existing.exists():
            raise ExportExists(existing)
    found = latest_purge(engine)
    log = log_id(engine, found[1] if found is not None else None)
    with _create(path) as out:
        try:
            result = export_events(engine, out, selection, line_format)
            document = result.document(path.name, log, now())
            if key is not None:
                document = sign_document(document, key)
            text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            with _create(manifest_path) as manifest_out:
                try:
                    manifest_out.write(text.encode())
                except BaseException:
                    manifest_path.unlink(missing_ok=True)
                    raise
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return ExportFiles(path, manifest_path, document, result)


def _create(path: Path) -> BinaryIO:
    """A new file for writing; an existing one is refused even if it appeared since the first check."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ExportExists(path) from None
    except OSError as exc:
        raise AuditError(f"{path}: cannot create the file: {exc.strerror}") from None
    return os.fdopen(descriptor, "wb")
