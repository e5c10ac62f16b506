"""The RFC 6962 Merkle tree over the event log: tree heads and proofs read from ``run_events``.

Leaf ``i`` (0-based) is the 32 raw bytes of the ``hash`` of the event at ``seq = i + 1``: that hash
already commits to the event's whole body and to its predecessor, so the tree adds what the chain
lacks, short proofs. A tree head (size, root) kept elsewhere (a signed checkpoint) lets anyone check
with a few hashes that one event is in the log (inclusion) and that a later log still starts with
exactly the events the head covered (consistency): a rewritten chain, which ``audit verify`` cannot
see on its own, changes every later root.

Reads stream the ``hash`` column in ``seq`` order (a server-side cursor on PostgreSQL), page by page,
and hash each proof's subtrees in the same single pass (``tracker.merkle.range_roots``), so memory
stays flat whatever the size. A tree needs ``seq`` to run 1, 2, 3 … without a gap or a repeat; where
it does not, :class:`MerkleLogError` names the ``seq`` (``audit verify`` then tells the whole story).
Nothing here checks the chain itself: the tree covers the hashes as stored.

Proofs are plain JSON-able dicts with hex hashes; :func:`check_inclusion` and
:func:`check_consistency` verify them without a database.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from contextlib import closing
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from tracker.errors import AuditError
from tracker.merkle import (
    consistency_proof_ranges,
    inclusion_proof_ranges,
    leaf_hash,
    range_roots,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tracker.store.schema import run_events

# Rows per fetch; a row is a seq and 64 hex characters.
_PAGE = 10_000


class MerkleLogError(AuditError):
    """The log cannot back the Merkle tree asked for (a size past its end, a gap or repeat in seq)."""


def tree_root(engine: Engine, tree_size: int | None = None) -> tuple[int, str]:
    """(size, hex root) of the tree over the first ``tree_size`` events (default: all of them)."""
    if tree_size is not None:
        _check_size("tree size", tree_size)
    with engine.connect() as connection, closing(_leaf_hashes(connection, tree_size)) as leaves:
        return _hex_head(root_from_leaf_hashes(leaves))


def inclusion_proof(engine: Engine, seq: int, tree_size: int | None = None) -> dict[str, Any]:
    """The proof that the event at ``seq`` is in the tree of ``tree_size`` events (default: all).

    ``{"seq", "tree_size", "leaf_hash", "event_hash", "proof": [...], "root"}``, hashes in hex; the
    proof lists the sibling subtree roots from the leaf up (RFC 9162 §2.1.3).
    """
    with engine.connect() as connection:
        size = _event_count(connection) if tree_size is None else tree_size
        _check_size("tree size", size)
        if not 1 <= seq <= size:
            raise MerkleLogError(f"seq {seq} is not in a tree of {size} events (seq 1 to {size})")
        ranges = [(0, size), (seq - 1, seq), *inclusion_proof_ranges(seq - 1, size)]
        with closing(_leaf_hashes(connection, size)) as leaves:
            root, leaf, *proof = range_roots(leaves, ranges)
        event_hash = connection.execute(select(run_events.c.hash).where(run_events.c.seq == seq)).scalar_one()
    return {
        "seq": seq,
        "tree_size": size,
        "leaf_hash": leaf.hex(),
        "event_hash": event_hash,
        "proof": [node.hex() for node in proof],
        "root": root.hex(),
    }


def consistency_proof(engine: Engine, old_size: int, new_size: int | None = None) -> dict[str, Any]:
    """The proof that the tree of ``old_size`` events is a prefix of the tree of ``new_size`` (default: all).

    ``{"old_size", "new_size", "old_root", "new_root", "proof": [...]}``, hashes in hex (RFC 9162 §2.1.4).
    """
    with engine.connect() as connection:
        size = _event_count(connection) if new_size is None else new_size
        _check_size("new size", size)
        _check_size("old size", old_size)
        if old_size > size:
            raise MerkleLogError(f"old size {old_size} is larger than new size {size}: a log only grows")
        ranges = [(0, old_size), (0, size), *consistency_proof_ranges(old_size, size)]
        with closing(_leaf_hashes(connection, size)) as leaves:
            old_root, new_root, *proof = range_roots(leaves, ranges)
    return {
        "old_size": old_size,
        "new_size": size,
        "old_root": old_root.hex(),
        "new_root": new_root.hex(),
        "proof": [node.hex() for node in proof],
    }


def check_inclusion(proof: Mapping[str, Any], root: str | None = None) -> bool:
    """True when an :func:`inclusion_proof` dict holds: its event hash is in its tree.

    ``root``, a root trusted from elsewhere (a checkpoint of the same size), must then equal the
    proof's. A dict that is not a proof at all (a key missing, a value of the wrong type, bad hex)
    raises ``ValueError``.
    """
    seq, tree_size = _integer(proof, "seq"), _integer(proof, "tree_size")
    event_hash, claimed_leaf = _hex(proof, "event_hash"), _hex(proof, "leaf_hash")
    claimed_root, path = _hex(proof, "root"), _hex_list(proof, "proof")
    if root is not None and _hex_value("root", root) != claimed_root:
        return False
    leaf = leaf_hash(event_hash)
    return leaf == claimed_leaf and verify_inclusion(leaf, seq - 1, tree_size, path, claimed_root)


def check_consistency(proof: Mapping[str, Any], old_root: str | None = None, new_root: str | None = None) -> bool:
    """True when a :func:`consistency_proof` dict holds: its old tree is a prefix of its new one.

    ``old_root`` / ``new_root``, roots trusted from elsewhere (checkpoints of those sizes), must then
    equal the proof's. A dict that is not a proof at all raises ``ValueError``.
    """
    old_size, new_size = _integer(proof, "old_size"), _integer(proof, "new_size")
    claimed_old, claimed_new = _hex(proof, "old_root"), _hex(proof, "new_root")
    path = _hex_list(proof, "proof")
    if old_root is not None and _hex_value("old_root", old_root) != claimed_old:
        return False
    if new_root is not None and _hex_value("new_root", new_root) != claimed_new:
        return False
    return verify_consistency(old_size, new_size, claimed_old, claimed_new, path)


# --- reading the log ------------------------------------------------------------------------------------


def _leaf_hashes(connection: Connection, tree_size: int | None) -> Generator[bytes, None, None]:
    """Leaf hashes of the events with ``seq`` 1 to ``tree_size`` (default: all), in ``seq`` order.

    Raises :class:`MerkleLogError` at the first ``seq`` missing or repeated, at a hash that is not 64 hex
    digits, and when the log ends before ``tree_size``.
    """
    seq_column = run_events.c.seq
    query = select(seq_column, run_events.c.hash)
    if tree_size is not None:
        query = query.where(seq_column <= tree_size)
    # Rows that share a seq (possible only once the primary key is dropped) come in a fixed order.
    query = query.order_by(seq_column, run_events.c.hash)
    expected = 1
    # A server-side cursor on PostgreSQL: closed here even when the caller stops reading early.
    with connection.execution_options(yield_per=_PAGE).execute(query) as result:
        for page in result.partitions():
            for seq, event_hash in page:
                if seq != expected:
                    raise MerkleLogError(_out_of_sequence(seq, expected))
                try:
                    data = bytes.fromhex(event_hash)
                except ValueError:
                    data = b""
                if len(data) != 32:
                    raise MerkleLogError(f"seq {seq}: the event hash is not 64 hex digits, so it cannot be a leaf")
                yield leaf_hash(data)
                expected += 1
    if tree_size is not None and expected <= tree_size:
        raise MerkleLogError(f"tree size {tree_size} asked, but the log has {expected - 1} events")


def _out_of_sequence(seq: int, expected: int) -> str:
    if seq > expected:
        missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
        return f"{missing} missing from the log: a Merkle tree needs every event (run `tracker audit verify`)"
    if seq < 1:
        return f"seq {seq} is not a position in the log (they start at 1; run `tracker audit verify`)"
    return f"seq {seq} appears more than once in the log (run `tracker audit verify`)"


def _event_count(connection: Connection) -> int:
    # max(seq), not count(*): in an intact log they agree, and a gap is then reported by the stream.
    return int(connection.execute(select(func.coalesce(func.max(run_events.c.seq), 0))).scalar_one())


def _check_size(name: str, size: int) -> None:
    if size < 0:
        raise MerkleLogError(f"{name} {size} is negative: a tree has 0 or more events")


def _hex_head(head: tuple[int, bytes]) -> tuple[int, str]:
    return head[0], head[1].hex()


# --- reading a proof dict -------------------------------------------------------------------------------


def _field(proof: Mapping[str, Any], key: str) -> Any:
    if key not in proof:
        raise ValueError(f"not a Merkle proof: {key!r} is missing")
    return proof[key]


def _integer(proof: Mapping[str, Any], key: str) -> int:
    value = _field(proof, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not a Merkle proof: {key!r} must be an integer, not {value!r}")
    return value


def _hex_value(key: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"not a Merkle proof: {key!r} must be a hex string, not {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"not a Merkle proof: {key!r} is not hex: {value!r}") from None


def _hex(proof: Mapping[str, Any], key: str) -> bytes:
    return _hex_value(key, _field(proof, key))


def _hex_list(proof: Mapping[str, Any], key: str) -> list[bytes]:
    values = _field(proof, key)
    if not isinstance(values, list):
        raise ValueError(f"not a Merkle proof: {key!r} must be a list of hex strings")
    return [_hex_value(f"{key}[{index}]", value) for index, value in enumerate(values)]
