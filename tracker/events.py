"""The event model: immutable events, their canonical serialisation and the hash chain.

An :class:`EventDraft` is what the diff engine decides happened; the store turns it into an
:class:`Event` by giving it its global ``seq``, ``recorded_at`` and its place in the hash chain.
The recipe (also in ``docs/events.md``, so that an auditor can recompute it without this code):

    hash = SHA-256( prev_hash + "\\n" + canonical_json(body) )   (hex, lowercase)

where ``body`` is the object of the columns ``seq, kind, run_id, thread_id, version, event_type,
occurred_at, observed_at, recorded_at, data, source`` and ``canonical_json`` writes keys sorted, no spaces,
UTF-8 (no ``\\u`` escapes for non-ASCII), and every number that has an integral value without a
fraction (``1700000000``, not ``1700000000.0``). The first event's ``prev_hash`` is 64 zeros.

Sensitive free text (per :attr:`Lifecycle.sensitive_fields`) never enters ``data``: it is replaced
by ``{"$payload": "<sha256 of its canonical JSON>"}`` and stored separately, so it can be erased
later without touching a chained row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

import orjson

GENESIS_HASH: Final = "0" * 64

FIRST_SEEN: Final = "first_seen"
STATUS_CHANGED: Final = "status_changed"
FIELDS_CHANGED: Final = "fields_changed"
STATUS_ANOMALY: Final = "status_anomaly"
LATE_OBSERVATION: Final = "late_observation"
# Visibility of runs that stop moving or vanish, and of polls that came late (tracker sync):
RUN_STALE: Final = "run_stale"  # still live well past its deadline (expires_at)
RUN_LOST: Final = "run_lost"  # the API no longer returns a run the ledger knows as live (404)
POLL_GAP: Final = "poll_gap"  # the run was not polled for longer than the configured cadence
# A time the API says has passed lies later than the observer's clock (beyond the lifecycle's tolerance).
API_TIME_AHEAD: Final = "api_time_ahead"
# Audit facts about a run's history itself (tracker audit erase): signed, chained, never a status change.
PAYLOAD_ERASED: Final = "payload_erased"
EVENT_TYPES: Final = frozenset(
    {
        FIRST_SEEN,
        STATUS_CHANGED,
        FIELDS_CHANGED,
        STATUS_ANOMALY,
        LATE_OBSERVATION,
        RUN_STALE,
        RUN_LOST,
        POLL_GAP,
        API_TIME_AHEAD,
        PAYLOAD_ERASED,
    }
)

# The ledger's own stream: facts about the log rather than about one object (a purge, an observer clock
# that went backwards). Its events have kind LEDGER_KIND and run_id LEDGER_STREAM, and no projection.
LEDGER_KIND: Final = "tracker.ledger"
LEDGER_STREAM: Final = "ledger"
LOG_PURGED: Final = "log_purged"
CLOCK_BACKWARDS: Final = "clock_backwards"

PAYLOAD_REF: Final = "$payload"


class EventDraft(NamedTuple):
    """An event decided by the diff engine, not yet placed in the log."""

    kind: str
    run_id: str
    thread_id: str | None  # the object's group; None for kinds without one (batches, responses, ...)
    version: int
    event_type: str
    occurred_at: float
    observed_at: float
    data: dict[str, Any]


class Event(NamedTuple):
    """An event as stored: a draft with its global position and chain hashes.

    ``data_json`` is ``canonical_json(data)``, exactly the text of the ``data`` column; ``source`` is the
    canonical JSON text of where the event came from (:func:`source_json`), exactly the ``source`` column.
    """

    seq: int
    kind: str
    run_id: str
    thread_id: str | None
    version: int
    event_type: str
    occurred_at: float
    observed_at: float
    recorded_at: float
    data: dict[str, Any]
    prev_hash: str
    hash: str
    data_json: str
    source: str


def _plain(value: Any) -> Any:
    # Exact type checks: this runs for every value of every hashed event, and isinstance is slower.
    kind = type(value)
    if kind is float:
        return int(value) if value.is_integer() else value
    if kind is dict:
        return {key: _plain(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    if kind is str or kind is int or value is None or kind is bool:
        return value
    if isinstance(value, float):
        return _plain(float(value))
    if isinstance(value, Mapping):
        return _plain(dict(value))
    if isinstance(value, list | tuple):
        return _plain(list(value))
    return value


# One encoder, built once: json.dumps with non-default options builds a new encoder on every call.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _has_integral_float(text: str) -> bool:
    # How the encoder writes a float with an integral value: "3.0", "-0.0", "1e+16". Text inside strings
    # can look the same, which only costs the exact (slower) path, never a wrong result.
    return ".0," in text or ".0}" in text or ".0]" in text or "e+" in text or text.endswith(".0")


def _orjson_differs(raw: bytes) -> bool:
    # Where orjson's text may differ from the recipe's (the json module's): an integral float ("3.0",
    # "1e+16"), an exponent ("1e-07" there, "1e-7" here) and 1e-5 <= |x| < 1e-4 ("1.5e-05" there,
    # "0.000015" here). Anything else orjson writes byte for byte as the json module does (keys sorted by
    # code point, the same escapes, shortest round-trip floats); tests/test_core_properties.py checks
    # that against the recipe itself. Text inside strings can match too, which only costs the slow path.
    return (
        b".0," in raw
        or b".0}" in raw
        or b".0]" in raw
        or b"e+" in raw
        or b"e-" in raw
        or b"0.0000" in raw
        or raw.endswith(b".0")
    )


def _canonical(value: Any) -> tuple[str, Any]:
    """(canonical JSON of ``value``, ``value`` with integral floats as integers: what the text reads back as)."""
    if type(value) is not float:
        try:
            # Four to eight times faster than the json module; used only where it writes the same bytes.
            raw = _orjson_sorted(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # integers beyond 64 bits, keys that are not strings
            pass
        else:
            if not _orjson_differs(raw):
                return raw.decode(), value
        try:
            text = _encode(value)
        except TypeError:  # a mapping or sequence type the encoder does not take: normalise it first
            pass
        else:
            if not _has_integral_float(text):
                return text, value
    plain = _plain(value)
    return _encode(plain), plain


_orjson_sorted = orjson.dumps


def canonical_json(value: Any) -> str:
    """The one serialisation that hashes are computed over (see the module docstring)."""
    return _canonical(value)[0]


def canonical_data(value: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(``value`` with integral floats as integers, its canonical JSON): what reading the text back gives."""
    text, plain = _canonical(value)
    return plain, text


def json_time(value: float) -> float | int:
    """A time as canonical JSON writes it: integral seconds as an integer."""
    return int(value) if type(value) is float and value.is_integer() else value


# The encoder's own string writer (ensure_ascii=False): quotes, escapes quote, backslash and controls.
_json_string: Callable[[str], str] = json.encoder.encode_basestring


def body_json(
    seq: int,
    kind: str,
    run_id: str,
    thread_id: str | None,
    version: int,
    event_type: str,
    occurred_at: float,
    observed_at: float,
    recorded_at: float,
    data_json: str,
    source: str,
) -> str:
    """``canonical_json`` of an event's body, from its columns and the canonical texts of data and source.

    Keys in sorted order; numbers as the encoder writes them (``str`` of an int, ``repr`` of a float).
    """
    group = "null" if thread_id is None else _json_string(thread_id)
    return (
        f'{{"data":{data_json},"event_type":{_json_string(event_type)},"kind":{_json_string(kind)},'
        f'"observed_at":{json_time(observed_at)},"occurred_at":{json_time(occurred_at)},'
        f'"recorded_at":{json_time(recorded_at)},"run_id":{_json_string(run_id)},"seq":{int(seq)},'
        f'"source":{source},"thread_id":{group},"version":{int(version)}}}'
    )


def source_json(source: Mapping[str, Any]) -> str:
    """The ``source`` of events, as stored and hashed: where they came from, as canonical JSON.

    ``{"ingest": "<path, or - for stdin>"}`` for ``tracker ingest``; ``{"sync": <sync_runs.id>,
    "base_url": <the server, without credentials or query>}`` for ``tracker sync`` (the sync's record
    also names the host and process).
    """
    if not source:
        raise ValueError("an event source names where the events came from, e.g. {'ingest': 'file.jsonl'}")
    return canonical_json(dict(source))


def event_body(event: Event) -> dict[str, Any]:
    """The columns covered by the hash, as a plain object."""
    return {
        "seq": event.seq,
        "kind": event.kind,
        "run_id": event.run_id,
        "thread_id": event.thread_id,
        "version": event.version,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at,
        "observed_at": event.observed_at,
        "recorded_at": event.recorded_at,
        "data": event.data,
        "source": json.loads(event.source),
    }


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key!r}")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> Any:
    """``text`` parsed as JSON, refusing what the json module lets through: a key twice in one object, and
    NaN / Infinity (which canonical JSON never writes)."""
    return json.loads(text, object_pairs_hook=unique_keys, parse_constant=_no_constant)


def stored_body(
    seq: Any,
    kind: Any,
    run_id: Any,
    thread_id: Any,
    version: Any,
    event_type: Any,
    occurred_at: Any,
    observed_at: Any,
    recorded_at: Any,
    data_text: Any,
    source_text: Any,
) -> dict[str, Any] | None:
    """The hashed body of a stored row, read strictly; None when the row cannot be an event.

    Strict because the database keeps whatever was written: an integer column holding text (SQLite), a
    JSON text with a key twice (whose last value a lenient parser would take, while SQL's JSON functions
    take the first). Every column must have its type, and ``data`` and ``source`` must each be one JSON
    object with unique keys, so that one stored row reads as one body, whoever reads it.
    """
    if type(seq) is not int or type(version) is not int:
        return None
    if not all(isinstance(value, str) for value in (kind, run_id, event_type, data_text, source_text)):
        return None
    if thread_id is not None and not isinstance(thread_id, str):
        return None
    times = []
    for value in (occurred_at, observed_at, recorded_at):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        times.append(float(value))
    try:
        data = strict_json(data_text)
        source = strict_json(source_text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(source, dict):
        return None
    return {
        "seq": seq,
        "kind": kind,
        "run_id": run_id,
        "thread_id": thread_id,
        "version": version,
        "event_type": event_type,
        "occurred_at": times[0],
        "observed_at": times[1],
        "recorded_at": times[2],
        "data": data,
        "source": source,
    }


def chain_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical body."""
    return hash_text(prev_hash, canonical_json(body))


def hash_text(prev_hash: str, body_text: str) -> str:
    """SHA-256 over the previous hash and an already canonical body text."""
    return hashlib.sha256(f"{prev_hash}\n{body_text}".encode()).hexdigest()


def seal(draft: EventDraft, seq: int, recorded_at: float, prev_hash: str, source: str) -> Event:
    """Place a draft in the chain after ``prev_hash`` at position ``seq``; ``source`` from :func:`source_json`."""
    data, data_json = canonical_data(draft.data)
    # A draft's fields from kind to observed_at are the event's columns in the same order.
    columns = draft[:7]
    text = body_json(seq, *columns, recorded_at, data_json, source)
    return Event(seq, *columns, recorded_at, data, prev_hash, hash_text(prev_hash, text), data_json, source)


def stored_json(value: Any) -> str:
    """How JSON columns are written: sorted keys, no spaces, so equal values are equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(value: Any) -> bytes:
    """Bytes that are equal for two values exactly when they are the same JSON (``true`` is not ``1``).

    Integral floats count as integers, as in canonical JSON. Not the canonical text itself, only a
    fast way to compare values: orjson writes it faster than the json module writes canonical JSON.
    """
    try:
        key = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # keys that are not strings, integers beyond 64 bits
        return canonical_json(value).encode()
    if b".0," in key or b".0}" in key or b".0]" in key or b"e+" in key or key.endswith(b".0"):
        # An integral float, written "1.0" (or text that looks like one): compare it as canonical JSON
        # does, equal to the integer, so that 1.0 in one snapshot and 1 in the stored history agree.
        return orjson.dumps(_plain(value), option=orjson.OPT_SORT_KEYS)
    return key


def payload_digest(value: Any) -> str:
    """Content address of a sensitive value: SHA-256 of its canonical JSON."""
    if type(value) is str:
        return _string_digests.get(value) or _remember(_string_digests, value, value)
    key = fingerprint(value)
    return _value_digests.get(key) or _remember(_value_digests, key, value)


# Sensitive values repeat (the same instructions on every poll of every run of an assistant), so their
# digests are remembered: strings by themselves, other values by their fingerprint.
_DIGEST_MEMO = 4096
_string_digests: dict[str, str] = {}
_value_digests: dict[bytes, str] = {}


def _remember(memo: dict[Any, str], key: Any, value: Any) -> str:
    digest = hashlib.sha256(canonical_json(value).encode()).hexdigest()
    if len(memo) >= _DIGEST_MEMO:
        memo.clear()
    memo[key] = digest
    return digest


def split_sensitive(
    body: Mapping[str, Any], sensitive: frozenset[str]
) -> tuple[dict[str, Any], dict[str, tuple[str, Any]]]:
    """(fields with sensitive values replaced by refs, {digest: (field, value)}); ``status`` dropped."""
    fields = dict(body)
    del fields["status"]
    payloads: dict[str, tuple[str, Any]] = {}
    for key in sensitive.intersection(fields):
        value = fields[key]
        if value is not None and value != {} and value != "":
            digest = payload_digest(value)
            payloads[digest] = (key, value)
            fields[key] = {PAYLOAD_REF: digest}
    return fields, payloads
