"""`tracker audit prove` / `check-proof`: Merkle proofs from the database, checked against signed
`--merkle` checkpoints without it (both databases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from tracker.cli import cli
from tracker.ingest import ingest_lines
from tracker.signing import generate_key
from tracker.synthetic import snapshot_stream

NOW = 1_800_000_000.0


def _ingest(engine: Engine, runs: int) -> None:
    lines = [json.dumps(record).encode() for record in snapshot_stream(runs, seed=3)]
    assert ingest_lines(engine, lines, lambda: NOW, source={"ingest": "t"}).events_appended > 0


def _tracker(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--database-url", db_url, *args])


@pytest.fixture
def keys(tmp_path: Path) -> tuple[str, str]:
    generate_key(tmp_path / "k")
    return str(tmp_path / "k"), str(tmp_path / "k.pub")


def _checkpoint(db_url: str, key: str, out: Path) -> dict[str, object]:
    result = _tracker(db_url, "audit", "checkpoint", "--merkle", "--key", key, "--out", str(out))
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(out.read_text())
    return document


def test_inclusion_and_consistency_proofs_check_against_signed_checkpoints(
    engine: Engine, db_url: str, keys: tuple[str, str], tmp_path: Path
) -> None:
    key, public = keys
    _ingest(engine, 5)
    old = _checkpoint(db_url, key, tmp_path / "old.json")
    _ingest(engine, 12)
    new = _checkpoint(db_url, key, tmp_path / "new.json")
    old_size = old["merkle"]["tree_size"]  # type: ignore[index]
    new_size = new["merkle"]["tree_size"]  # type: ignore[index]
    assert old_size == old["seq"] and new_size == new["seq"] and new_size > old_size  # type: ignore[operator]

    inclusion = _tracker(db_url, "audit", "prove", "inclusion", "3", "--tree-size", str(old_size))
    assert inclusion.exit_code == 0, inclusion.output
    (tmp_path / "inclusion.json").write_text(inclusion.stdout)
    checked = _tracker(
        db_url, "audit", "check-proof", str(tmp_path / "inclusion.json"), "--checkpoint", str(tmp_path / "old.json"),
        "--public-key", public,
    )  # fmt: skip
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.startswith("ok: the event at seq 3 (hash ")

    consistency = _tracker(db_url, "audit", "prove", "consistency", str(old_size), str(new_size))
    assert consistency.exit_code == 0, consistency.output
    (tmp_path / "consistency.json").write_text(consistency.stdout)
    both = ["--checkpoint", str(tmp_path / "old.json"), "--checkpoint", str(tmp_path / "new.json")]
    checked = _tracker(
        db_url, "audit", "check-proof", str(tmp_path / "consistency.json"), *both, "--public-key", public
    )
    assert checked.exit_code == 0, checked.output

    # A proof for another event, or a root nobody signed, does not hold.
    forged = {**json.loads(inclusion.stdout), "event_hash": "0" * 64}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    refused = _tracker(
        db_url, "audit", "check-proof", str(tmp_path / "forged.json"), "--checkpoint", str(tmp_path / "old.json"),
        "--public-key", public,
    )  # fmt: skip
    assert refused.exit_code == 1
    assert "does not hold" in refused.stderr
    missing = _tracker(
        db_url, "audit", "check-proof", str(tmp_path / "consistency.json"), "--checkpoint", str(tmp_path / "old.json"),
        "--public-key", public,
    )  # fmt: skip
    assert missing.exit_code == 1
    assert f"no --merkle checkpoint of tree size {new_size}" in missing.stderr


def test_a_checkpoint_edited_after_signing_is_refused(
    engine: Engine, db_url: str, keys: tuple[str, str], tmp_path: Path
) -> None:
    key, public = keys
    _ingest(engine, 5)
    document = _checkpoint(db_url, key, tmp_path / "cp.json")
    proof = _tracker(db_url, "audit", "prove", "inclusion", "1")
    (tmp_path / "p.json").write_text(proof.stdout)
    document["merkle"] = {**document["merkle"], "root": "ab" * 32}  # type: ignore[dict-item]
    (tmp_path / "edited.json").write_text(json.dumps(document))
    result = _tracker(
        db_url, "audit", "check-proof", str(tmp_path / "p.json"), "--checkpoint", str(tmp_path / "edited.json"),
        "--public-key", public,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "bad signature" in result.stderr
