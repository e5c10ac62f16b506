"""``tracker.store.merkle_log``: the Merkle tree over ``run_events``, on SQLite and PostgreSQL.

The tree read from the database must be the pure tree over the stored hashes; every proof it gives
must verify; and a log rewritten by someone who owns the database (guards off, the chain recomputed,
which ``audit verify`` cannot see) must no longer match a tree head taken before.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select

from tracker.events import chain_hash
from tracker.ingest import ingest_lines
from tracker.merkle import EMPTY_ROOT, leaf_hash, root_from_leaf_hashes
from tracker.merkle import consistency_proof as pure_consistency_proof
from tracker.merkle import inclusion_proof as pure_inclusion_proof
from tracker.store.audit import verify_chain
from tracker.store.merkle_log import (
    MerkleLogError,
    check_consistency,
    check_inclusion,
    consistency_proof,
    inclusion_proof,
    tree_root,
)
from tracker.store.schema import run_events
from tracker.synthetic import snapshot_stream

NOW = 1_800_000_000.0
HASHED = (
    "seq", "kind", "run_id", "thread_id", "version", "event_type", "occurred_at", "observed_at", "recorded_at",
    "data", "source",
)  # fmt: skip


def _ingest(engine: Engine, runs: int, seed: int) -> int:
    lines = [json.dumps(record).encode() for record in snapshot_stream(runs, seed=seed)]
    return ingest_lines(engine, lines, lambda: NOW, source={"ingest": "test"}).events_appended


def _stored_leaves(engine: Engine) -> list[bytes]:
    """Leaf hashes of the stored event hashes, read directly, in seq order."""
    with engine.connect() as connection:
        hashes = connection.execute(select(run_events.c.hash).order_by(run_events.c.seq)).scalars().all()
    return [leaf_hash(bytes.fromhex(value)) for value in hashes]


def _unguard(connection: Connection) -> None:
    """Switch the append-only triggers off, as the owner of the database can."""
    if connection.dialect.name == "sqlite":
        for trigger in ("trg_run_events_no_update", "trg_run_events_no_delete"):
            connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
    else:
        connection.exec_driver_sql("ALTER TABLE run_events DISABLE TRIGGER ALL")


def _rewrite_from(engine: Engine, seq: int) -> None:
    """Alter the data of the event at ``seq`` and recompute the chain from there on, hashes and links."""
    with engine.begin() as connection:
        _unguard(connection)
        query = select(run_events).where(run_events.c.seq >= seq).order_by(run_events.c.seq)
        rows = [dict(row._mapping) for row in connection.execute(query)]
        rows[0]["data"] = {**rows[0]["data"], "tampered": True}
        prev_hash = rows[0]["prev_hash"]
        for row in rows:
            new_hash = chain_hash(prev_hash, {key: row[key] for key in HASHED})
            update = run_events.update().where(run_events.c.seq == row["seq"])
            connection.execute(update.values(data=row["data"], prev_hash=prev_hash, hash=new_hash))
            prev_hash = new_hash


@pytest.fixture
def log(engine: Engine) -> int:
    """A freshly ingested, intact log; returns its number of events."""
    count = _ingest(engine, 6, seed=11)
    assert count >= 30
    return count


def _sizes(count: int) -> list[int]:
    return sorted({0, 1, 2, 3, 4, 7, 8, count // 2, count - 1, count})


# --- the tree is the pure tree over the stored hashes --------------------------------------------------------


def test_roots_are_the_pure_roots_of_the_stored_hashes(engine: Engine, log: int) -> None:
    leaves = _stored_leaves(engine)
    assert len(leaves) == log
    for size in _sizes(log):
        assert tree_root(engine, size) == (size, root_from_leaf_hashes(leaves[:size])[1].hex())
    assert tree_root(engine) == (log, root_from_leaf_hashes(leaves)[1].hex())


def test_empty_log_has_the_empty_root(engine: Engine) -> None:
    assert tree_root(engine) == (0, EMPTY_ROOT.hex())
    assert consistency_proof(engine, 0) == {
        "old_size": 0,
        "new_size": 0,
        "old_root": EMPTY_ROOT.hex(),
        "new_root": EMPTY_ROOT.hex(),
        "proof": [],
    }
    with pytest.raises(MerkleLogError, match="seq 1 is not in a tree of 0 events"):
        inclusion_proof(engine, 1)


def test_every_inclusion_proof_verifies(engine: Engine, log: int) -> None:
    leaves = _stored_leaves(engine)
    with engine.connect() as connection:
        event_hashes = connection.execute(select(run_events.c.hash).order_by(run_events.c.seq)).scalars().all()
    for size in (log, log // 2 + 1):
        root = tree_root(engine, size)[1]
        for seq in range(1, size + 1):
            proof = inclusion_proof(engine, seq, size)
            assert proof == {
                "seq": seq,
                "tree_size": size,
                "leaf_hash": leaves[seq - 1].hex(),
                "event_hash": event_hashes[seq - 1],
                "proof": [node.hex() for node in pure_inclusion_proof(seq - 1, leaves[:size])],
                "root": root,
            }
            assert check_inclusion(proof)
            assert check_inclusion(json.loads(json.dumps(proof)), root=root)


def test_every_consistency_proof_verifies(engine: Engine, log: int) -> None:
    leaves = _stored_leaves(engine)
    roots = {size: tree_root(engine, size)[1] for size in range(log + 1)}
    for new_size in (log, log - 3):
        for old_size in range(new_size + 1):
            proof = consistency_proof(engine, old_size, new_size)
            assert proof == {
                "old_size": old_size,
                "new_size": new_size,
                "old_root": roots[old_size],
                "new_root": roots[new_size],
                "proof": [node.hex() for node in pure_consistency_proof(old_size, leaves[:new_size])],
            }
            assert check_consistency(proof, old_root=roots[old_size], new_root=roots[new_size])


def test_proofs_default_to_the_whole_log(engine: Engine, log: int) -> None:
    assert inclusion_proof(engine, 3) == inclusion_proof(engine, 3, log)
    assert consistency_proof(engine, 5) == consistency_proof(engine, 5, log)


def test_a_grown_log_is_consistent_with_an_earlier_head(engine: Engine, log: int) -> None:
    old_size, old_root = tree_root(engine)
    old_proof = inclusion_proof(engine, 2)
    more = _ingest(engine, 9, seed=12)
    assert more > 0
    new_size, new_root = tree_root(engine)
    assert new_size == log + more
    assert new_root != old_root
    assert check_consistency(consistency_proof(engine, old_size), old_root=old_root, new_root=new_root)
    assert check_inclusion(old_proof, root=old_root)
    assert check_inclusion(inclusion_proof(engine, 2), root=new_root)


# --- what a tree head catches --------------------------------------------------------------------------------


def test_a_rewritten_chain_no_longer_matches_an_earlier_head(engine: Engine, log: int) -> None:
    altered = log // 2
    # Tree heads an auditor kept: the whole log, the log up to the altered event, and just before it.
    heads = {size: tree_root(engine, size)[1] for size in (log, altered, altered - 1)}
    proof_of_altered = inclusion_proof(engine, altered)
    proof_of_later = inclusion_proof(engine, log - 1)

    _rewrite_from(engine, altered)

    assert verify_chain(engine).ok  # the chain alone cannot see a rewrite from one event on
    new_size, new_root = tree_root(engine)
    assert new_size == log
    assert new_root != heads[log]
    for old_proof in (proof_of_altered, proof_of_later):
        assert check_inclusion(old_proof)  # still a proof of the old tree ...
        assert not check_inclusion(old_proof, root=new_root)  # ... but not of the log as it is now
    assert not check_inclusion(inclusion_proof(engine, altered), root=heads[log])
    for old_size in (log, altered):
        assert not check_consistency(consistency_proof(engine, old_size), old_root=heads[old_size])
    # The prefix before the altered event is untouched, and still provably so.
    assert check_consistency(consistency_proof(engine, altered - 1), old_root=heads[altered - 1])


def test_a_missing_event_is_named(engine: Engine, log: int) -> None:
    with engine.begin() as connection:
        _unguard(connection)
        connection.execute(run_events.delete().where(run_events.c.seq.in_([7, 8])))
    with pytest.raises(MerkleLogError, match="seq 7 to 8 missing from the log"):
        tree_root(engine)
    with pytest.raises(MerkleLogError, match="seq 7 to 8 missing from the log"):
        inclusion_proof(engine, 3)
    with pytest.raises(MerkleLogError, match="seq 7 to 8 missing from the log"):
        consistency_proof(engine, 3)
    assert tree_root(engine, 6)[0] == 6  # the intact prefix still has a tree


def test_a_hash_that_is_not_hex_is_named(engine: Engine, log: int) -> None:
    with engine.begin() as connection:
        _unguard(connection)
        connection.execute(run_events.update().where(run_events.c.seq == 4).values(hash="z" * 64))
    with pytest.raises(MerkleLogError, match="seq 4: the event hash is not 64 hex digits"):
        tree_root(engine)


def test_sizes_past_the_log_are_refused(engine: Engine, log: int) -> None:
    with pytest.raises(MerkleLogError, match=f"tree size {log + 1} asked, but the log has {log} events"):
        tree_root(engine, log + 1)
    with pytest.raises(MerkleLogError, match=f"tree size {log + 1} asked, but the log has {log} events"):
        consistency_proof(engine, 2, log + 1)
    with pytest.raises(MerkleLogError, match=f"seq {log + 1} is not in a tree of {log} events"):
        inclusion_proof(engine, log + 1, log)
    with pytest.raises(MerkleLogError, match="seq 0 is not in a tree"):
        inclusion_proof(engine, 0)
    with pytest.raises(MerkleLogError, match="old size 5 is larger than new size 3"):
        consistency_proof(engine, 5, 3)
    with pytest.raises(MerkleLogError, match="tree size -1 is negative"):
        tree_root(engine, -1)


# --- the proof documents -------------------------------------------------------------------------------------


def _with(document: dict[str, Any], /, **changes: Any) -> dict[str, Any]:
    return {**document, **changes}


def _other_hex(value: str) -> str:
    return ("1" if value[0] == "0" else "0") + value[1:]


def test_an_altered_inclusion_proof_fails(engine: Engine, log: int) -> None:
    proof = inclusion_proof(engine, 5)
    assert check_inclusion(proof)
    altered = {
        "event hash": _with(proof, event_hash=_other_hex(proof["event_hash"])),
        "leaf hash": _with(proof, leaf_hash=_other_hex(proof["leaf_hash"])),
        "root": _with(proof, root=_other_hex(proof["root"])),
        "seq": _with(proof, seq=6),
        "tree size": _with(proof, tree_size=log * 2),
        "path": _with(proof, proof=[_other_hex(proof["proof"][0]), *proof["proof"][1:]]),
        "short path": _with(proof, proof=proof["proof"][:-1]),
    }
    assert [name for name, document in altered.items() if check_inclusion(document)] == []
    assert not check_inclusion(proof, root=_other_hex(proof["root"]))


def test_an_altered_consistency_proof_fails(engine: Engine, log: int) -> None:
    proof = consistency_proof(engine, 5)
    assert check_consistency(proof)
    altered = {
        "old root": _with(proof, old_root=_other_hex(proof["old_root"])),
        "new root": _with(proof, new_root=_other_hex(proof["new_root"])),
        "old size": _with(proof, old_size=6),
        "new size": _with(proof, new_size=log * 2),
        "path": _with(proof, proof=[_other_hex(proof["proof"][0]), *proof["proof"][1:]]),
        "no path": _with(proof, proof=[]),
    }
    assert [name for name, document in altered.items() if check_consistency(document)] == []
    assert not check_consistency(proof, old_root=_other_hex(proof["old_root"]))
    assert not check_consistency(proof, new_root=_other_hex(proof["new_root"]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"root": None}, "'root' must be a hex string"),
        ({"seq": "5"}, "'seq' must be an integer"),
        ({"seq": True}, "'seq' must be an integer"),
        ({"proof": "ab"}, "'proof' must be a list of hex strings"),
        ({"event_hash": "xyz"}, "'event_hash' is not hex"),
    ],
)
def test_a_document_that_is_not_a_proof_is_refused(
    engine: Engine, log: int, change: dict[str, Any], message: str
) -> None:
    proof = inclusion_proof(engine, 5)
    with pytest.raises(ValueError, match=message):
        check_inclusion({**proof, **change})
    del proof["tree_size"]
    with pytest.raises(ValueError, match="'tree_size' is missing"):
        check_inclusion(proof)
