"""The event model: immutable events, their canonical serialisation and the hash chain.

An :class:`EventDraft` is what the diff engine decides happened; the store turns it into an
:class:`Event` by giving it its global ``seq``, ``recorded_at`` and its place in the hash chain.
The recipe (also in ``docs/events.md``, so that an auditor can recompute it without this code):

    hash = SHA-256( prev_hash + "\\n" + canonical_json(body) )   (hex, lowercase)

where ``body`` is the object of the columns ``seq, kind, run_id, thread_id, version, event_type,
occurred_at, observed_at, recorded_at, data`` and ``canonical_json`` writes keys sorted, no spaces,
UTF-8 (no ``\\u`` escapes for non-ASCII), and every number that has an integral value without a
fraction (``1700000000``, not ``1700000000.0``). The first event's ``prev_hash`` is 64 zeros.

Sensitive free text (per :attr:`Lifecycle.sensitive_fields`) never enters ``data``: it is replaced
by ``{"$payload": "<sha256 of its canonical JSON>"}`` and stored separately, so it can be erased
later without touching a chained row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

GENESIS_HASH: Final = "0" * 64

FIRST_SEEN: Final = "first_seen"
STATUS_CHANGED: Final = "status_changed"
FIELDS_CHANGED: Final = "fields_changed"
STATUS_ANOMALY: Final = "status_anomaly"
LATE_OBSERVATION: Final = "late_observation"
EVENT_TYPES: Final = frozenset({FIRST_SEEN, STATUS_CHANGED, FIELDS_CHANGED, STATUS_ANOMALY, LATE_OBSERVATION})

PAYLOAD_REF: Final = "$payload"


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event decided by the diff engine, not yet placed in the log."""

    kind: str
    run_id: str
    thread_id: str
    version: int
    event_type: str
    occurred_at: float
    observed_at: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """An event as stored: a draft with its global position and chain hashes."""

    seq: int
    kind: str
    run_id: str
    thread_id: str
    version: int
    event_type: str
    occurred_at: float
    observed_at: float
    recorded_at: float
    data: dict[str, Any]
    prev_hash: str
    hash: str


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
    if isinstance(value, dict):
        return _plain(dict(value))
    if isinstance(value, list | tuple):
        return _plain(list(value))
    return value


def canonical_json(value: Any) -> str:
    """The one serialisation that hashes are computed over (see the module docstring)."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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
    }


def chain_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical body."""
    return hashlib.sha256((prev_hash + "\n" + canonical_json(body)).encode("utf-8")).hexdigest()


def seal(draft: EventDraft, seq: int, recorded_at: float, prev_hash: str) -> Event:
    """Place a draft in the chain after ``prev_hash`` at position ``seq``."""
    body = {
        "seq": seq,
        "kind": draft.kind,
        "run_id": draft.run_id,
        "thread_id": draft.thread_id,
        "version": draft.version,
        "event_type": draft.event_type,
        "occurred_at": draft.occurred_at,
        "observed_at": draft.observed_at,
        "recorded_at": recorded_at,
        "data": draft.data,
    }
    return Event(
        seq=seq,
        kind=draft.kind,
        run_id=draft.run_id,
        thread_id=draft.thread_id,
        version=draft.version,
        event_type=draft.event_type,
        occurred_at=draft.occurred_at,
        observed_at=draft.observed_at,
        recorded_at=recorded_at,
        data=draft.data,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash, body),
    )


def stored_json(value: Any) -> str:
    """How JSON columns are written: sorted keys, no spaces, so equal values are equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_digest(value: Any) -> str:
    """Content address of a sensitive value: SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def split_sensitive(
    body: Mapping[str, Any], sensitive: frozenset[str]
) -> tuple[dict[str, Any], dict[str, tuple[str, Any]]]:
    """(fields with sensitive values replaced by refs, {digest: (field, value)}); ``status`` dropped."""
    fields: dict[str, Any] = {}
    payloads: dict[str, tuple[str, Any]] = {}
    for key, value in body.items():
        if key == "status":
            continue
        if key in sensitive and value is not None and value != {} and value != "":
            digest = payload_digest(value)
            payloads[digest] = (key, value)
            fields[key] = {PAYLOAD_REF: digest}
        else:
            fields[key] = value
    return fields, payloads
