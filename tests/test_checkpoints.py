"""Signed checkpoints (``tracker audit keygen / checkpoint / verify --checkpoint``), through the command line
and the library, on both databases.

A checkpoint is the log's head (seq, hash, time, event count) signed with an Ed25519 key that never enters
the database; kept elsewhere, it lets ``audit verify`` see what the hash chain alone cannot: a tail cut
off, or the whole chain rewritten and rehashed by someone with write access (tests/test_adversarial.py
lists every attack).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, inspect, text

from tests.conftest import fresh_postgres_url
from tests.test_adversarial import drop_guards, rehash_from
from tests.test_audit_verify import _altered, _delete, _row, _set, _unguard
from tracker.cli import cli
from tracker.errors import AuditError
from tracker.ingest import ingest_lines
from tracker.signing import (
    KEY_ENV,
    PUBLIC_KEY_ENV,
    SigningError,
    SigningKey,
    generate_key,
    key_id,
    load_signing_key,
    load_verify_key,
    signed_bytes,
    verify_document,
)
from tracker.store import open_database
from tracker.store.audit import verify_chain
from tracker.store.checkpoints import check_checkpoints, make_checkpoint, read_checkpoint
from tracker.store.merkle_log import tree_root
from tracker.synthetic import snapshot_stream

NOW = 1_800_000_000.0
# What every checkpoint carries (docs/audit.md); --merkle adds "merkle".
FIELDS = {"format", "log_id", "seq", "head_hash", "events", "first_seq", "time", "key_id", "signature"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _ingest(engine: Engine, runs: int, seed: int, now: float = NOW) -> int:
    lines = [json.dumps(record).encode() for record in snapshot_stream(runs, seed=seed)]
    return ingest_lines(engine, lines, lambda: now, source={"ingest": "test"}).events_appended


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(PUBLIC_KEY_ENV, raising=False)


@pytest.fixture
def log(engine: Engine) -> int:
    """A freshly ingested, intact log; returns its number of events."""
    count = _ingest(engine, 5, seed=41)
    assert count >= 30
    return count


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    """The auditor's private key; its public half is beside it (``.pub``)."""
    generate_key(tmp_path / "audit.key")
    return tmp_path / "audit.key"


@pytest.fixture
def key(key_path: Path) -> SigningKey:
    return load_signing_key(key_path)


def _pub(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


def tracker(db_url: str, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """``tracker --database-url DB_URL ARGS`` in process."""
    return CliRunner().invoke(cli, ["--database-url", db_url, *args], env=env)


def _checkpoint_file(db_url: str, key_path: Path, out: Path, *options: str) -> dict[str, Any]:
    result = tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--out", str(out), *options)
    assert result.exit_code == 0, result.output
    return read_checkpoint(out)


def _verify(db_url: str, key_path: Path, *checkpoints: Path, options: tuple[str, ...] = ()) -> Result:
    paths = [argument for path in checkpoints for argument in ("--checkpoint", str(path))]
    return tracker(db_url, "audit", "verify", *paths, "--public-key", str(_pub(key_path)), *options)


def _failed_line(path: Path, seq: int, detail: str) -> str:
    return f"tracker: error: checkpoint {path} (seq {seq}): failed: {detail}"


def _tamper(engine: Engine, seq: int) -> None:
    """Change the data of the event at ``seq``, with the guards off (its hash no longer matches)."""
    with engine.begin() as connection:
        _unguard(connection)
        _set(connection, seq, data=_altered(_row(connection, seq), "data"))


def _rewrite(engine: Engine, seq: int) -> None:
    """Change the event at ``seq`` and recompute every hash from there on: the chain holds again."""
    _tamper(engine, seq)
    with engine.begin() as connection:
        rehash_from(connection, seq)
    assert verify_chain(engine).ok


def _plain_verify_passes(db_url: str) -> bool:
    """Whether plain ``audit verify`` (no checkpoint) passes."""
    return tracker(db_url, "audit", "verify").exit_code == 0


def _head(engine: Engine) -> tuple[int, str]:
    report = verify_chain(engine)
    return report.head_seq, report.head_hash


# --- keys ------------------------------------------------------------------------------------------------


def test_keygen_writes_an_owner_only_private_key_and_its_pub(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    result = CliRunner().invoke(cli, ["audit", "keygen", str(path)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert _pub(path).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    private = load_signing_key(path)
    assert load_verify_key(_pub(path)).key_id == private.public.key_id == key_id(private.key.public_key())
    assert result.stdout == (
        f"private key {path} (keep it secret), public key {_pub(path)}, key id {private.public.key_id}\n"
    )
    assert not (tmp_path / "tracker.db").exists()  # no database was opened


@pytest.mark.parametrize("existing", ["private", "public"])
def test_keygen_never_overwrites_a_key(tmp_path: Path, existing: str) -> None:
    path = tmp_path / "audit.key"
    there = path if existing == "private" else _pub(path)
    there.write_bytes(b"precious")
    result = CliRunner().invoke(cli, ["audit", "keygen", str(path)])
    assert result.exit_code == 1
    assert result.stderr == f"tracker: error: {there}: already exists; refusing to overwrite a key\n"
    assert there.read_bytes() == b"precious"
    assert sorted(tmp_path.iterdir()) == [there]  # nothing else written either


def test_keys_can_come_from_the_environment(engine: Engine, db_url: str, log: int, key_path: Path) -> None:
    signed = tracker(db_url, "audit", "checkpoint", env={KEY_ENV: str(key_path)})
    assert signed.exit_code == 0, signed.output
    document = json.loads(signed.stdout)
    verify_document(document, load_verify_key(_pub(key_path)))
    out = key_path.with_name("head.json")
    out.write_text(signed.stdout)
    checked = tracker(db_url, "audit", "verify", "--checkpoint", str(out), env={PUBLIC_KEY_ENV: str(_pub(key_path))})
    assert checked.exit_code == 0, checked.output
    assert f"checkpoint {out} (seq {log}): ok: the log extends it (0 events since)" in checked.stdout


MISSING_KEYS = {
    "checkpoint_without_a_key": (
        ["audit", "checkpoint"],
        f"a signing key is needed: give its path with the option or in ${KEY_ENV}",
    ),
    "checkpoint_with_a_key_file_that_is_not_there": (
        ["audit", "checkpoint", "--key", "{tmp}/nowhere.key"],
        "{tmp}/nowhere.key: cannot read the signing key: No such file or directory",
    ),
    "checkpoint_with_the_public_key_as_key": (
        ["audit", "checkpoint", "--key", "{tmp}/audit.key.pub"],
        "{tmp}/audit.key.pub: not an unencrypted PEM private key (make one with `tracker audit keygen`)",
    ),
    "verify_checkpoint_without_a_public_key": (
        ["audit", "verify", "--checkpoint", "{tmp}/head.json"],
        f"--checkpoint needs the public key: give --public-key or set ${PUBLIC_KEY_ENV}",
    ),
    "verify_with_a_public_key_file_that_is_not_there": (
        ["audit", "verify", "--checkpoint", "{tmp}/head.json", "--public-key", "{tmp}/nowhere.pub"],
        "{tmp}/nowhere.pub: cannot read the public key: No such file or directory",
    ),
}


@pytest.mark.parametrize("case", sorted(MISSING_KEYS))
def test_a_missing_key_is_a_one_line_error(
    engine: Engine, db_url: str, log: int, key: SigningKey, tmp_path: Path, case: str
) -> None:
    (tmp_path / "head.json").write_text(json.dumps(make_checkpoint(engine, key, lambda: NOW)))
    arguments, message = MISSING_KEYS[case]
    result = tracker(db_url, *(argument.format(tmp=tmp_path) for argument in arguments))
    assert result.exit_code == 1
    assert result.stderr == f"tracker: error: {message.format(tmp=tmp_path)}\n"
    assert result.stdout == ""


def _secrets(private: Path) -> tuple[list[str], list[bytes]]:
    """The private key as text (PEM body, raw hex, raw base64) and as bytes, in every form worth looking for."""
    key = load_signing_key(private).key
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pem_body = "".join(private.read_text().splitlines()[1:-1])
    texts = [pem_body, raw.hex(), base64.b64encode(raw).decode()]
    return texts, [raw, *(text_form.encode() for text_form in texts)]


def _every_table_as_text(engine: Engine) -> str:
    tables = inspect(engine).get_table_names()
    assert {"run_events", "run_payloads", "ledger_purges"} <= set(tables)
    with engine.connect() as connection:
        return "\n".join(
            repr(tuple(row)) for table in tables for row in connection.execute(text(f'SELECT * FROM "{table}"'))
        )


def test_the_private_key_never_leaves_its_file(engine: Engine, db_url: str, log: int, tmp_path: Path) -> None:
    key_path = tmp_path / "audit.key"
    results = [CliRunner().invoke(cli, ["audit", "keygen", str(key_path)])]
    texts, raw_forms = _secrets(key_path)
    out = tmp_path / "head.json"
    results += [
        tracker(db_url, "audit", "checkpoint", "--key", str(key_path)),
        tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--out", str(out), "--merkle"),
        tracker(db_url, "audit", "erase", "--field", "metadata", "--reason", "request 1", "--key", str(key_path)),
        # The private key file is accepted where a public key is asked for (its public half is used).
        tracker(db_url, "audit", "verify", "--checkpoint", str(out), "--public-key", str(key_path), "--json"),
    ]
    assert [result.exit_code for result in results] == [0] * len(results), [result.output for result in results]
    # The key file given where it does not belong: the errors name the file, never its content.
    misplaced = [
        tracker(db_url, "audit", "verify", "--checkpoint", str(key_path), "--public-key", str(_pub(key_path))),
        tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--since", str(key_path)),
        tracker(db_url, "audit", "checkpoint", "--key", str(_pub(key_path))),
    ]
    assert [result.exit_code for result in misplaced] == [1, 1, 1]
    assert all(str(key_path) in result.stderr for result in misplaced)
    outputs = "".join(result.stdout + result.stderr for result in results + misplaced)
    tables = _every_table_as_text(engine)
    assert "payload_erased" in tables  # the erasure's signed records are there; the key is not
    files = {out: out.read_bytes()}
    if engine.dialect.name == "sqlite":
        database = Path(str(engine.url.database))
        files.update({path: path.read_bytes() for path in database.parent.glob(database.name + "*")})
    for secret in texts:
        assert secret not in outputs
        assert secret not in tables
    for path, content in files.items():
        for secret_bytes in raw_forms:
            assert secret_bytes not in content, path


# --- audit checkpoint ------------------------------------------------------------------------------------


def _canonical_without_signature(document: dict[str, Any]) -> bytes:
    """docs/events.md's canonical JSON recipe, written out again here, over the document minus its signature."""

    def plain(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            return {name: plain(item) for name, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    unsigned = {name: value for name, value in document.items() if name != "signature"}
    return json.dumps(plain(unsigned), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_checkpoint_to_stdout_signs_the_head_with_its_fields(
    engine: Engine, db_url: str, log: int, key_path: Path
) -> None:
    before = time.time()
    result = tracker(db_url, "audit", "checkpoint", "--key", str(key_path))
    after = time.time()
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert set(document) >= FIELDS
    head_seq, head_hash = _head(engine)
    with engine.connect() as connection:
        first_hash = _row(connection, 1)["hash"]
    assert document["format"] == "tracker.checkpoint/1"
    assert (document["seq"], document["head_hash"], document["events"], document["first_seq"]) == (
        head_seq,
        head_hash,
        log,
        1,
    )
    assert head_seq == log
    assert document["log_id"] == first_hash
    assert ISO_UTC.fullmatch(document["time"])
    moment = datetime.strptime(document["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert before - 0.001 <= moment <= after + 0.001
    public = load_verify_key(_pub(key_path))
    assert document["key_id"] == public.key_id
    verify_document(document, public)
    assert signed_bytes(document) == _canonical_without_signature(document)


def test_make_checkpoint_signs_seq_head_hash_time_and_count(engine: Engine, log: int, key: SigningKey) -> None:
    more = _ingest(engine, 3, seed=42, now=NOW + 60)
    document = make_checkpoint(engine, key, lambda: NOW + 0.5)
    assert (document["seq"], document["events"], document["first_seq"]) == (log + more, log + more, 1)
    assert document["head_hash"] == _head(engine)[1]
    assert document["time"] == "2027-01-15T08:00:00.500000Z"
    verify_document(document, key.public)
    with pytest.raises(SigningError, match="bad signature"):
        verify_document({**document, "events": log}, key.public)


def test_checkpoint_out_writes_a_new_file_and_never_overwrites(
    engine: Engine, db_url: str, log: int, key_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "head.json"
    result = tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"checkpoint of seq {log} written to {out}\n"
    first = out.read_bytes()
    document = read_checkpoint(out)
    verify_document(document, load_verify_key(_pub(key_path)))
    again = tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--out", str(out))
    assert again.exit_code == 2
    assert f"{out} already exists; checkpoints are never overwritten" in again.stderr
    assert out.read_bytes() == first


def test_the_signature_verifies_with_openssl_alone(
    engine: Engine, db_url: str, log: int, key_path: Path, tmp_path: Path
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command line is not installed")
    result = tracker(db_url, "audit", "checkpoint", "--key", str(key_path))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(document["signature"]))

    def openssl_verify(signed: bytes) -> subprocess.CompletedProcess[str]:
        (tmp_path / "signed.bin").write_bytes(signed)
        command = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(_pub(key_path)), "-rawin"]
        command += ["-in", str(tmp_path / "signed.bin"), "-sigfile", str(tmp_path / "sig.bin")]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    good = openssl_verify(_canonical_without_signature(document))
    assert good.returncode == 0, good.stderr
    assert "Signature Verified Successfully" in good.stdout
    edited = openssl_verify(_canonical_without_signature({**document, "seq": document["seq"] - 1}))
    assert edited.returncode == 1
    assert "Signature Verification Failure" in edited.stdout


def test_checkpoint_refuses_to_sign_a_broken_chain(
    engine: Engine, db_url: str, log: int, key: SigningKey, key_path: Path, tmp_path: Path
) -> None:
    _tamper(engine, 5)
    out = tmp_path / "head.json"
    result = tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--out", str(out))
    assert result.exit_code == 1
    assert result.stderr == (
        "tracker: error: the chain is broken at seq 5 (hash does not match the event's content); "
        "refusing to sign a checkpoint\n"
    )
    assert not out.exists()
    with pytest.raises(AuditError, match="broken at seq 5"):
        make_checkpoint(engine, key, lambda: NOW)


def test_checkpoint_since_verifies_only_the_events_after_the_trusted_one(
    engine: Engine, db_url: str, log: int, key_path: Path, tmp_path: Path
) -> None:
    earlier = _checkpoint_file(db_url, key_path, tmp_path / "earlier.json")
    more = _ingest(engine, 4, seed=43, now=NOW + 60)
    # An event the earlier checkpoint already vouches for is not read again: changing it (without its
    # hash) goes unseen by --since, though a full checkpoint refuses.
    _tamper(engine, 2)
    full = tracker(db_url, "audit", "checkpoint", "--key", str(key_path))
    assert full.exit_code == 1
    assert "broken at seq 2" in full.stderr
    since = tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--since", str(tmp_path / "earlier.json"))
    assert since.exit_code == 0, since.output
    document = json.loads(since.stdout)
    assert (document["seq"], document["events"], document["log_id"]) == (log + more, log + more, earlier["log_id"])
    verify_document(document, load_verify_key(_pub(key_path)))


@pytest.mark.parametrize("where", ["after", "at"])
def test_checkpoint_since_still_refuses_a_tampered_event_after_it(
    engine: Engine, db_url: str, log: int, key: SigningKey, key_path: Path, tmp_path: Path, where: str
) -> None:
    earlier = _checkpoint_file(db_url, key_path, tmp_path / "earlier.json")
    _ingest(engine, 4, seed=44, now=NOW + 60)
    if where == "after":
        _tamper(engine, log + 2)
        expected = f"the chain is broken at seq {log + 2} (hash does not match the event's content)"
    else:  # the event the checkpoint signed was rewritten, and everything after it rehashed
        _rewrite(engine, log)
        expected = f"the chain is broken at seq {log + 1} (prev_hash does not match the hash of the event before it)"
    result = tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--since", str(tmp_path / "earlier.json"))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"tracker: error: {expected}")
    assert result.stderr.endswith("refusing to sign a checkpoint\n")
    with pytest.raises(AuditError, match=re.escape(expected)):
        make_checkpoint(engine, key, lambda: NOW, since=earlier)


def test_checkpoint_since_refuses_a_log_cut_below_it(
    engine: Engine, db_url: str, log: int, key_path: Path, tmp_path: Path
) -> None:
    _checkpoint_file(db_url, key_path, tmp_path / "earlier.json")
    with engine.begin() as connection:
        _unguard(connection)
        _delete(connection, log - 1, log)
    result = tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--since", str(tmp_path / "earlier.json"))
    assert result.exit_code == 1
    assert f"broken at seq {log} (the event at the checkpoint's seq is not the one" in result.stderr


def test_checkpoint_since_signed_by_another_key_is_refused(
    engine: Engine, db_url: str, log: int, key: SigningKey, key_path: Path, tmp_path: Path
) -> None:
    generate_key(tmp_path / "other.key")
    _checkpoint_file(db_url, tmp_path / "other.key", tmp_path / "other.json")
    result = tracker(db_url, "audit", "checkpoint", "--key", str(key_path), "--since", str(tmp_path / "other.json"))
    assert result.exit_code == 1
    other_id = load_verify_key(_pub(tmp_path / "other.key")).key_id
    detail = f"signed by key {other_id!r}, not by the trusted key {key.public.key_id}"
    assert result.stderr == f"tracker: error: the --since checkpoint: {detail}\n"
    with pytest.raises(SigningError, match="not by the trusted key"):
        make_checkpoint(engine, key, lambda: NOW, since=read_checkpoint(tmp_path / "other.json"))


# --- audit verify --checkpoint ---------------------------------------------------------------------------


@pytest.fixture
def two_checkpoints(engine: Engine, db_url: str, log: int, key_path: Path, tmp_path: Path) -> list[Path]:
    """A checkpoint of the log, then one after another ingest, then one more ingest (neither is the head)."""
    paths = [tmp_path / "first.json", tmp_path / "second.json"]
    _checkpoint_file(db_url, key_path, paths[0])
    assert _ingest(engine, 4, seed=45, now=NOW + 60) > 0
    _checkpoint_file(db_url, key_path, paths[1])
    assert _ingest(engine, 4, seed=46, now=NOW + 120) > 0
    return paths


def test_verify_accepts_the_current_and_older_checkpoints_after_more_ingests(
    engine: Engine, db_url: str, key: SigningKey, key_path: Path, tmp_path: Path, two_checkpoints: list[Path]
) -> None:
    current = tmp_path / "current.json"
    _checkpoint_file(db_url, key_path, current)
    paths = [*two_checkpoints, current]
    seqs = [read_checkpoint(path)["seq"] for path in paths]
    head_seq = _head(engine)[0]
    assert seqs[0] < seqs[1] < seqs[2] == head_seq
    result = _verify(db_url, key_path, *paths, options=("--json",))
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert (output["ok"], output["chain_ok"]) == (True, True)
    assert output["checkpoints"] == [
        {"file": str(path), "seq": seq, "status": "ok", "detail": f"the log extends it ({head_seq - seq} events since)"}
        for path, seq in zip(paths, seqs, strict=True)
    ]
    text_result = _verify(db_url, key_path, *paths)
    assert text_result.exit_code == 0
    assert text_result.stderr == ""
    assert text_result.stdout.splitlines()[1:] == [
        f"checkpoint {path} (seq {seq}): ok: the log extends it ({head_seq - seq} events since)"
        for path, seq in zip(paths, seqs, strict=True)
    ]
    report = verify_chain(engine)
    documents = [(str(path), read_checkpoint(path)) for path in paths]
    assert [result.status for result in check_checkpoints(engine, report, documents, key.public)] == ["ok"] * 3


def test_verify_fails_when_the_tail_was_cut_after_the_checkpoint(
    engine: Engine, db_url: str, key_path: Path, tmp_path: Path, two_checkpoints: list[Path]
) -> None:
    second = read_checkpoint(two_checkpoints[1])["seq"]
    with engine.begin() as connection:
        drop_guards(connection)
        connection.execute(text("DELETE FROM run_events WHERE seq > :seq"), {"seq": second - 2})
    assert _plain_verify_passes(db_url)
    result = _verify(db_url, key_path, *two_checkpoints)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        _failed_line(
            two_checkpoints[1],
            second,
            f"the log ends at seq {second - 2}, before the checkpoint's seq {second}: events were removed from "
            "its end, or the log was replaced",
        )
    ]
    first = read_checkpoint(two_checkpoints[0])["seq"]
    assert f"checkpoint {two_checkpoints[0]} (seq {first}): ok" in result.stdout  # the older one still holds


def test_verify_fails_when_the_whole_chain_was_rewritten_and_rehashed(
    engine: Engine, db_url: str, key: SigningKey, key_path: Path, two_checkpoints: list[Path]
) -> None:
    _rewrite(engine, 2)  # early in the log: every later hash and prev_hash recomputed
    plain = tracker(db_url, "audit", "verify")
    assert plain.exit_code == 0, plain.output  # the chain alone cannot see it
    assert plain.stdout.startswith("ok: ")
    result = _verify(db_url, key_path, *two_checkpoints)
    assert result.exit_code == 1
    seqs = [read_checkpoint(path)["seq"] for path in two_checkpoints]
    assert result.stderr.splitlines() == [
        _failed_line(
            path,
            seq,
            f"the event at seq {seq} is not the one the checkpoint signed: "
            f"the log was rewritten at or before seq {seq}",
        )
        for path, seq in zip(two_checkpoints, seqs, strict=True)
    ]
    report = verify_chain(engine)
    documents = [(str(path), read_checkpoint(path)) for path in two_checkpoints]
    assert report.ok
    assert [result.status for result in check_checkpoints(engine, report, documents, key.public)] == ["failed"] * 2


@pytest.mark.parametrize("field", ["seq", "head_hash", "events", "log_id"])
def test_verify_fails_when_the_checkpoint_file_was_edited(
    engine: Engine, db_url: str, log: int, key_path: Path, tmp_path: Path, field: str
) -> None:
    path = tmp_path / "head.json"
    document = _checkpoint_file(db_url, key_path, path)
    with engine.connect() as connection:
        earlier = _row(connection, log - 3)
    # Edits that leave a plausible checkpoint (an earlier seq with its real hash, another event's hash, ...):
    # only the signature objects.
    edits: dict[str, dict[str, Any]] = {
        "seq": {"seq": log - 3, "head_hash": earlier["hash"]},
        "head_hash": {"head_hash": earlier["hash"]},
        "events": {"events": log + 10},
        "log_id": {"log_id": None},
    }
    edited = {**document, **edits[field]}
    path.write_text(json.dumps(edited, indent=2))
    result = _verify(db_url, key_path, path)
    assert result.exit_code == 1
    detail = f"{path}: bad signature (the document was changed after signing, or forged)"
    assert result.stderr.splitlines() == [_failed_line(path, edited["seq"], detail)]


def test_verify_fails_for_a_checkpoint_signed_by_another_key(
    engine: Engine, db_url: str, log: int, key: SigningKey, key_path: Path, tmp_path: Path
) -> None:
    generate_key(tmp_path / "other.key")
    path = tmp_path / "other.json"
    document = _checkpoint_file(db_url, tmp_path / "other.key", path)
    result = _verify(db_url, key_path, path)
    assert result.exit_code == 1
    detail = f"{path}: signed by key {document['key_id']!r}, not by the trusted key {key.public.key_id}"
    assert result.stderr.splitlines() == [_failed_line(path, log, detail)]


@pytest.fixture
def other_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second, migrated database on the same backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'other.db'}"
    return fresh_postgres_url(request.getfixturevalue("postgres"))


@pytest.fixture
def other_engine(other_db_url: str) -> Iterator[Engine]:
    engine = open_database(other_db_url)
    yield engine
    engine.dispose()


def test_verify_fails_for_a_checkpoint_of_another_database(
    engine: Engine, db_url: str, log: int, key: SigningKey, key_path: Path, tmp_path: Path, other_engine: Engine
) -> None:
    assert _ingest(other_engine, 5, seed=47) > 0
    document = make_checkpoint(other_engine, key, lambda: NOW)
    path = tmp_path / "other.json"
    path.write_text(json.dumps(document))
    result = _verify(db_url, key_path, path)
    assert result.exit_code == 1
    detail = "the checkpoint is of another log (its log_id differs)"
    assert result.stderr.splitlines() == [_failed_line(path, document["seq"], detail)]
    [checked] = check_checkpoints(engine, verify_chain(engine), [("other", document)], key.public)
    assert (checked.status, checked.detail) == ("failed", detail)


# --- Merkle tree heads -----------------------------------------------------------------------------------


def test_merkle_checkpoint_signs_the_tree_head(
    engine: Engine, db_url: str, log: int, key: SigningKey, key_path: Path, tmp_path: Path
) -> None:
    document = _checkpoint_file(db_url, key_path, tmp_path / "head.json", "--merkle")
    assert set(document) >= FIELDS | {"merkle"}
    size, root = tree_root(engine)
    assert document["merkle"] == {"tree_size": size, "root": root}
    assert size == document["seq"] == log
    verify_document(document, key.public)
    with pytest.raises(SigningError, match="bad signature"):
        verify_document({**document, "merkle": {"tree_size": size, "root": "0" * 64}}, key.public)
    more = _ingest(engine, 3, seed=48, now=NOW + 60)
    later = make_checkpoint(engine, key, lambda: NOW + 60, merkle=True)
    assert later["merkle"] == {"tree_size": log + more, "root": tree_root(engine, log + more)[1]}
    assert later["merkle"]["root"] != root
    assert tree_root(engine, log) == (size, root)  # the earlier head still describes the log's prefix
    assert _verify(db_url, key_path, tmp_path / "head.json").exit_code == 0
