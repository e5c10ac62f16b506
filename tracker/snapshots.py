"""What the API returns, read leniently: one JSON Lines record -> snapshots, or a precise rejection.

A record is a bare object (``"object"`` one of the kinds of :mod:`tracker.lifecycle`: ``thread.run`` (the
default when ``object`` is absent), ``thread.run.step``, ``response``, ``batch``, ``fine_tuning.job``), an
envelope ``{"observed_at": ..., "run": {...}}`` (any one key) or a list page ``{"object": "list", "data":
[...]}``. Only the fields the lifecycle needs are checked (``id``, the group field (a run's
``thread_id``; none for the newer kinds), ``status``, ``created_at`` and the timestamp fields that date
statuses); every
other field, known or not, is kept verbatim in :attr:`Snapshot.body`. Both the early-2024 run shape
(``file_ids``, ``retrieval`` tools, no ``usage``) and the current one pass, because neither is pinned.

Nothing here reads the clock: "observed now" is the ``now`` argument.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, NamedTuple, NoReturn

import orjson

from tracker.events import LEDGER_STREAM
from tracker.lifecycle import LIFECYCLES, Lifecycle


class Snapshot(NamedTuple):
    """One observation of one object: its body as the API returned it, and when it was seen."""

    kind: str
    object_id: str
    group_id: str | None  # None for kinds without a group (lifecycle.group_field None)
    status: str
    created_at: float
    observed_at: float
    body: dict[str, Any]

    @property
    def ended(self) -> bool:
        """Whether the object is in a terminal status of its kind."""
        return LIFECYCLES[self.kind].is_terminal(self.status)


class SnapshotError(ValueError):
    """A record that cannot be read as snapshots; ``str()`` names the field and the reason."""


def _number(text: str) -> float | int:
    value = float(text)
    if value.is_integer():
        return int(value)
    if not math.isfinite(value):
        raise SnapshotError(f"number {text} is out of range")
    return value


def _constant(text: str) -> None:
    raise SnapshotError(f"invalid JSON: {text} is not a JSON number")


# Integral floats ("1.0") are read as integers, as canonical JSON writes them (see tracker.events): the
# values folded while ingesting are then exactly those read back from the stored text when rebuilding.
_decode = json.JSONDecoder(parse_float=_number, parse_constant=_constant).decode


def decode_json(text: str) -> Any:
    """One JSON document; raises json.JSONDecodeError, or SnapshotError for a number JSON cannot hold."""
    return _decode(text)


# orjson reads an integer below -2**63 or above 2**64 - 1 as a float (precision lost): a line with a run
# of 19 digits or more (maybe inside a string, which only costs the slower reader) goes to the standard
# library. Found by mapping every digit to "0" and looking for nineteen of them: a sixth of the time of
# the regular expression \d{19}, which cost three times orjson's own parse of a run line.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def decode_line(line: bytes) -> Any:
    """One JSON document from raw bytes; raises SnapshotError saying what is wrong and where.

    orjson reads a line in less than half the time of the standard library. Lines with very long
    integers, and every line orjson refuses, go through the standard library, which keeps such integers
    exact and gives the exact position of an error.
    """
    if _NINETEEN_DIGITS not in line.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"not UTF-8 (byte {exc.start + 1})") from None
    try:
        record = decode_json(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    try:
        json.dumps(record, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise SnapshotError("invalid JSON: a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)") from None
    return record


def round_time(value: float) -> float:
    """Times are kept to the millisecond so that every database stores them exactly alike."""
    return round(value, 3)


def parse_observed_at(value: object, where: str = "observed_at") -> float:
    """Epoch seconds from a number or an ISO-8601 string (a naive one is read as UTC)."""
    if isinstance(value, bool):
        raise SnapshotError(f"field '{where}': expected epoch seconds or an ISO-8601 string, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise SnapshotError(f"field '{where}': {value!r} is not a valid epoch time")
        return round_time(float(value))
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise SnapshotError(f"field '{where}': {value!r} is not an ISO-8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return round_time(moment.timestamp())
    raise SnapshotError(f"field '{where}': expected epoch seconds or an ISO-8601 string, got {_type(value)}")


def read_record(text: str, now: float) -> list[Snapshot]:
    """Parse one JSON Lines record. Raises SnapshotError naming the field for the first problem."""
    record = decode_line(text.encode("utf-8", "surrogatepass"))
    if not isinstance(record, dict):
        raise SnapshotError(f"expected a JSON object, got {_type(record)}")
    return read_object(record, now)


def read_object(record: dict[str, Any], now: float) -> list[Snapshot]:
    """Snapshots from an already decoded record (bare object, envelope or list page)."""
    good, bad = read_page_leniently(record, now)
    if bad:
        raise bad[0]
    return good


def read_page_leniently(record: dict[str, Any], now: float) -> tuple[list[Snapshot], list[SnapshotError]]:
    """Snapshots of a record; a list page keeps its good items and reports each bad one."""
    record, observed_at, where = _unwrap_envelope(record, now)
    if record.get("object") != "list":
        return [_read_item(record, observed_at, where)], []
    data = record.get("data")
    if not isinstance(data, list):
        raise SnapshotError(f"{where}field 'data': a list page needs a list, got {_type(data)}")
    good: list[Snapshot] = []
    bad: list[SnapshotError] = []
    for index, item in enumerate(data):
        try:
            good.append(_read_item(item, observed_at, where=f"{where}data[{index}]: "))
        except SnapshotError as exc:
            bad.append(exc)
    return good, bad


def _unwrap_envelope(record: dict[str, Any], now: float) -> tuple[dict[str, Any], float, str]:
    """(inner record, observed_at, error prefix); a record without an envelope is observed ``now``."""
    if "observed_at" not in record or "object" in record:
        return record, now, ""
    observed_at = parse_observed_at(record["observed_at"])
    payload_keys = [key for key in record if key != "observed_at"]
    if len(payload_keys) != 1 or not isinstance(record[payload_keys[0]], dict):
        raise SnapshotError(
            f"an envelope holds 'observed_at' and exactly one object (e.g. 'run'), got keys {sorted(record)}"
        )
    key = payload_keys[0]
    return record[key], observed_at, f"{key}: "


def _read_item(item: object, observed_at: float, where: str) -> Snapshot:
    if not isinstance(item, dict):
        raise SnapshotError(f"{where}expected a JSON object, got {_type(item)}")
    try:
        return to_snapshot(item, observed_at)
    except SnapshotError as exc:
        if not where:
            raise
        raise SnapshotError(f"{where}{exc}") from None


def to_snapshot(body: dict[str, Any], observed_at: float) -> Snapshot:
    """Check the fields the lifecycle relies on and wrap ``body`` (kept whole) as a snapshot.

    Integral floats at the top level become integers in place (``1.0`` -> ``1``), as canonical JSON
    writes them (tracker.events), so that hashing and comparing need no normalising pass later.
    """
    kind = body.get("object", "thread.run")
    lifecycle = LIFECYCLES.get(kind) if type(kind) is str else None
    if lifecycle is None:
        raise SnapshotError(f"field 'object': unsupported object kind {kind!r}")
    object_id = body.get(lifecycle.id_field)
    group_id = None if lifecycle.group_field is None else body.get(lifecycle.group_field)
    status = body.get("status")
    if not (
        type(object_id) is str
        and object_id
        and (lifecycle.group_field is None or (type(group_id) is str and group_id))
        and type(status) is str
        and status
    ):
        _explain(body, lifecycle)
    for name in lifecycle.required_fields:
        if body.get(name) is None:
            _explain(body, lifecycle)
    if object_id == LEDGER_STREAM:
        raise SnapshotError(f"field '{lifecycle.id_field}': {object_id!r} is reserved for the ledger's own stream")
    for name in lifecycle.time_fields:
        value = body.get(name)
        if type(value) is int or (value is None and name != lifecycle.created_field):
            continue
        if type(value) is not float or not math.isfinite(value):
            _explain(body, lifecycle)
    for key, value in body.items():
        if type(value) is float and value.is_integer():
            body[key] = int(value)
    return Snapshot(
        lifecycle.kind,
        object_id,
        group_id,
        status,
        float(body[lifecycle.created_field]),
        round_time(observed_at),
        body,
    )


def _explain(body: dict[str, Any], lifecycle: Lifecycle) -> NoReturn:
    """Raise the SnapshotError for the first field of ``body`` that the lifecycle cannot read."""
    for name in lifecycle.required_fields:
        if body.get(name) is None:
            raise SnapshotError(f"field '{name}': required, missing")
    for text_field in (lifecycle.id_field, lifecycle.group_field, "status"):
        if text_field is not None and (not isinstance(body.get(text_field), str) or not body[text_field]):
            raise SnapshotError(f"field '{text_field}': expected a non-empty string, got {_type(body.get(text_field))}")
    for name in lifecycle.time_fields:
        value = body.get(name)
        if value is None and name != lifecycle.created_field:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SnapshotError(f"field '{name}': expected epoch seconds (a number), got {_type(value)}")
    raise AssertionError("_explain called for a readable snapshot")  # pragma: no cover


def _type(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
