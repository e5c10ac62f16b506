"""Signed checkpoints: the log's head, signed outside the database, so that a cut tail or a rewritten
chain is caught by ``audit verify --checkpoint`` (docs/audit.md).

A checkpoint is a small JSON document::

    {"format": "tracker.checkpoint/1", "log_id": <hash of the log's first event>, "seq": <head seq>,
     "head_hash": <its hash>, "events": <events in the log>, "first_seq": <first seq the log holds>,
     "time": <ISO-8601 UTC>, ["merkle": {"tree_size", "root"}],
     "key_id": ..., "signature": ...}

signed with Ed25519 (:mod:`tracker.signing`). The hash chain makes one (seq, hash) pair stand for the
whole log up to it: a later log *extends* the checkpoint when it still holds that event with that hash
and its chain verifies.

Every number in a checkpoint is an integer and every time is text, so the bytes its signature covers
(canonical JSON) are also what ``json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` writes: an auditor can check it with the ``openssl`` command line (docs/audit.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tracker.errors import AuditError
from tracker.events import GENESIS_HASH, PAYLOAD_ERASED
from tracker.signing import SigningError, SigningKey, Trusted, VerifyKey, key_ids, sign_document, verify_document
from tracker.store.audit import ChainReport, latest_purge, purge_anchor, purge_checkpoint_field, verify_chain

FORMAT = "tracker.checkpoint/1"


def utc_text(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_id(engine: Engine, purge: Mapping[str, Any] | None = None) -> str | None:
    """The hash of the log's first event ever: what tells one log's checkpoints from another's.

    Once the log has been purged, that event is gone and the identity is the one the purge's *signed*
    checkpoint carries (``purge`` is the data of the newest ``log_purged`` event); check that checkpoint
    (:func:`check_purge`) before trusting it.
    """
    if purge is not None:
        found = purge_checkpoint_field(purge, "log_id")
        return found if isinstance(found, str) else None
    with engine.connect() as connection:
        found = connection.execute(text("SELECT hash FROM run_events WHERE seq = 1")).scalar()
    return None if found is None else str(found)


def make_checkpoint(
    engine: Engine,
    key: SigningKey,
    now: Callable[[], float],
    since: Mapping[str, Any] | None = None,
    merkle: bool = False,
    trusted: Sequence[VerifyKey] = (),
) -> dict[str, Any]:
    """Verify the chain (from genesis or the purge point, or only after the trusted checkpoint ``since``)
    and sign its head. Refuses to sign a broken chain."""
    anchor = None
    if since is not None:
        verify_document(since, [key.public, *trusted], "the --since checkpoint")
        anchor = (int(since["seq"]), str(since["head_hash"]))
        found = latest_purge(engine)
        purged = purge_anchor(found[1]) if found is not None else None
        if purged is not None and anchor[0] < purged[0]:
            raise AuditError(
                f"the --since checkpoint (seq {anchor[0]}) is older than the purge (through seq {purged[0]}); "
                "sign a full checkpoint instead"
            )
        if purged is not None and anchor[0] == purged[0]:
            anchor = None  # the purge's own checkpoint: its event is gone, so check from the purge point
    report = verify_chain(engine, since=anchor, outside=False if since is not None else None)
    if not report.ok:
        raise AuditError(f"{report.first_problem()}; refusing to sign a checkpoint")
    require_genuine_purge(report, [key.public, *trusted], "sign a checkpoint")
    if report.head_seq == 0:
        raise AuditError("the log is empty; there is nothing to checkpoint")
    moment = now()
    document: dict[str, Any] = {
        "format": FORMAT,
        "log_id": log_id(engine, report.purge),
        "seq": report.head_seq,
        "head_hash": report.head_hash,
        "time": utc_text(moment),
    }
    document["events"], document["first_seq"] = _extent(engine)
    if merkle:
        from tracker.store.merkle_log import tree_root

        if report.purge is not None:
            raise AuditError(
                f"--merkle needs the log from seq 1, and it was purged up to seq {report.anchor[0]}: "
                "Merkle proofs over a purged log are not supported (docs/audit.md)"
            )

        size, root = tree_root(engine, report.head_seq)
        document["merkle"] = {"tree_size": size, "root": root}
    return sign_document(document, key)


def _extent(engine: Engine) -> tuple[int, int]:
    """(events in the log, the first seq it holds; 0 when empty)."""
    with engine.connect() as connection:
        count, first = connection.execute(text("SELECT count(*), coalesce(min(seq), 0) FROM run_events")).one()
    return int(count), int(first)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file, read and shape-checked; errors name the file and the field."""
    where = str(path)
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuditError(f"{where}: cannot read the checkpoint: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditError(f"{where}: not a checkpoint (invalid JSON: {exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise AuditError(f"{where}: not a checkpoint (format is not {FORMAT!r})")
    for name, kind in (("seq", int), ("head_hash", str), ("events", int)):
        if not isinstance(document.get(name), kind) or isinstance(document.get(name), bool):
            raise AuditError(f"{where}: field {name!r} is missing or not a {kind.__name__}")
    return document


@dataclass(frozen=True)
class CheckpointResult:
    """What one checkpoint says about the log: ``ok`` (extended), ``archived`` (before a purge), or a problem."""

    name: str
    seq: int
    status: str  # ok | archived | failed
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.name, "seq": self.seq, "status": self.status, "detail": self.detail}


def check_checkpoints(
    engine: Engine, report: ChainReport, checkpoints: list[tuple[str, dict[str, Any]]], key: Trusted
) -> list[CheckpointResult]:
    """Whether the log (already verified into ``report``) extends each signed checkpoint."""
    results = []
    current_log = log_id(engine, report.purge)
    for name, document in checkpoints:
        seq = int(document["seq"])

        def result(status: str, detail: str, name: str = name, seq: int = seq) -> CheckpointResult:
            return CheckpointResult(name, seq, status, detail)

        try:
            verify_document(document, key, name)
        except SigningError as exc:
            results.append(result("failed", str(exc)))
            continue
        if report.purge is not None and (current_log is None or document.get("log_id") != current_log):
            # After a purge the log's identity comes from the purge's signed checkpoint, and every
            # checkpoint must name it: one without would match any log that starts at that point.
            results.append(result("failed", "the checkpoint does not name this log (log_id differs or is missing)"))
            continue
        if current_log is not None and document.get("log_id") not in (None, current_log):
            results.append(result("failed", "the checkpoint is of another log (its log_id differs)"))
            continue
        if seq > report.head_seq:
            results.append(
                result(
                    "failed",
                    f"the log ends at seq {report.head_seq}, before the checkpoint's seq {seq}: "
                    "events were removed from its end, or the log was replaced",
                )
            )
            continue
        anchor_seq, anchor_hash = report.anchor
        if report.purge is not None and seq <= anchor_seq:
            if seq == anchor_seq and document["head_hash"] != anchor_hash:
                results.append(result("failed", "the purge carried the chain forward from another hash"))
            else:
                results.append(
                    result(
                        "archived",
                        f"seq {seq} was purged (up to seq {anchor_seq}); check it against the archive export",
                    )
                )
            continue
        stored = _hashes_at(engine, seq)
        if seq == 0 and document["head_hash"] == GENESIS_HASH:
            results.append(result("ok", "empty log"))
        elif stored != [document["head_hash"]]:
            results.append(
                result(
                    "failed",
                    f"the event at seq {seq} is not the one the checkpoint signed: the log was rewritten "
                    f"at or before seq {seq}",
                )
            )
        else:
            results.append(result("ok", f"the log extends it ({report.head_seq - seq} events since)"))
    return results


def _hashes_at(engine: Engine, seq: int) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT hash FROM run_events WHERE seq = :seq ORDER BY hash"), {"seq": seq})
        return [str(row[0]) for row in rows]


def require_genuine_purge(report: ChainReport, key: Trusted, what: str) -> None:
    """Raise unless the purge the log starts after (if any) carries a genuine purge checkpoint by ``key``:
    signing or purging on top of a forged purge would launder it."""
    result = check_purge(report, key)
    if result is not None and not result.ok:
        raise AuditError(f"the log starts after a purge that does not hold ({result.detail}); refusing to {what}")


def write_new_checkpoint(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as JSON to a new file; never over an existing one (a checkpoint is evidence)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise AuditError(f"{path} already exists; checkpoints are never overwritten") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


def check_purge(report: ChainReport, key: Trusted | None) -> CheckpointResult | None:
    """The purge the log starts after: its checkpoint must be signed by ``key`` and be the chain's anchor.

    Without a key the purge cannot be told from a forged one (anyone who can write the database could
    delete a prefix and append a purge event), so it is reported as unchecked, which fails.
    """
    if report.purge is None:
        return None
    checkpoint = report.purge.get("checkpoint")
    name = "purge record"
    anchor = purge_anchor(report.purge)  # where the chain starts (report.anchor may be a later --since)
    seq = anchor[0] if anchor is not None else report.anchor[0]
    if key is None:
        return CheckpointResult(name, seq, "failed", "the purge's checkpoint is not checked: give --public-key")
    if not isinstance(checkpoint, dict):
        return CheckpointResult(name, seq, "failed", "the purge carries no checkpoint")
    try:
        verify_document(checkpoint, key, "the purge's checkpoint")
    except SigningError as exc:
        return CheckpointResult(name, seq, "failed", str(exc))
    if checkpoint.get("purge") is not True:
        # An ordinary checkpoint at the same seq is signed too, but authorises no deletion.
        return CheckpointResult(name, seq, "failed", "the purge's checkpoint is not a signed purge checkpoint")
    if anchor is None or (checkpoint.get("seq"), checkpoint.get("head_hash")) != anchor:
        return CheckpointResult(name, seq, "failed", "the log does not start where the signed purge says it ends")
    return CheckpointResult(
        name, seq, "ok", f"seq {checkpoint.get('first_seq')}..{seq} purged, signed by {checkpoint.get('key_id')}"
    )


def check_proof(proof: Mapping[str, Any], checkpoints: list[tuple[str, dict[str, Any]]], key: Trusted) -> str:
    """Check a Merkle proof (``audit prove``) against the roots of signed ``--merkle`` checkpoints.

    Returns what was proven; raises :class:`AuditError` when a checkpoint is not genuine, a needed root is
    missing, or the proof does not hold.
    """
    from tracker.store.merkle_log import check_consistency, check_inclusion

    roots: dict[int, str] = {}
    for name, document in checkpoints:
        verify_document(document, key, name)
        merkle = document.get("merkle")
        if isinstance(merkle, dict):
            roots[int(merkle["tree_size"])] = str(merkle["root"])

    def root(size: Any) -> str:
        if not isinstance(size, int) or size not in roots:
            raise AuditError(f"no --merkle checkpoint of tree size {size} was given to check the proof against")
        return roots[size]

    try:
        if "old_size" in proof:
            old = proof["old_size"]
            held = check_consistency(proof, None if old == 0 else root(old), root(proof.get("new_size")))
            what = f"the tree of {old} events is a prefix of the tree of {proof['new_size']}"
        else:
            held = check_inclusion(proof, root(proof.get("tree_size")))
            what = (
                f"the event at seq {proof['seq']} (hash {proof['event_hash']}) is in the tree of {proof['tree_size']}"
            )
    except ValueError as exc:
        raise AuditError(f"not a proof: {exc}") from None
    if not held:
        raise AuditError("the proof does not hold against the signed checkpoint(s)")
    return f"ok: {what}, as signed by {key_ids(key)}"


def check_erasures(engine: Engine, key: Trusted) -> CheckpointResult | None:
    """Every ``payload_erased`` event in the log must hold an erasure record signed by ``key`` for its own
    run: the chain proves the event was appended, the signature who decided the erasure."""
    problems: list[str] = []
    count = 0
    query = text("SELECT seq, run_id, CAST(data AS TEXT) FROM run_events WHERE event_type = :type ORDER BY seq")
    with engine.connect() as connection:
        for seq, run_id, data in connection.execute(query, {"type": PAYLOAD_ERASED}):
            count += 1
            try:
                record = json.loads(data)["erasure"]
                if not isinstance(record, dict):
                    raise TypeError("not an object")
                verify_document(record, key, f"the erasure record at seq {seq}")
                if record.get("run_id") != run_id or record.get("format") != "tracker.erasure/1":
                    raise SigningError(f"the erasure record at seq {seq} is not one for run {run_id}")
            except SigningError as exc:
                problems.append(str(exc))
            except (TypeError, ValueError, KeyError):
                problems.append(f"the payload_erased event at seq {seq} holds no erasure record")
    if not count:
        return None
    if problems:
        return CheckpointResult("erasure records", 0, "failed", f"{problems[0]} ({len(problems)} of {count} bad)")
    return CheckpointResult("erasure records", 0, "ok", f"{count} erasure records signed by {key_ids(key)}")
