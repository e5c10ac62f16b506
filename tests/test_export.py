"""``tracker audit export`` and the stdlib-only check of docs/audit.md ("Exports").

The checking script and the ``openssl`` commands are taken from docs/audit.md at test time and run as
an auditor would (the script under ``python -I -S``: no site-packages, so nothing but the standard
library), so the documentation cannot drift from what the export writes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, make_url, select, text

from tracker.cli import cli
from tracker.events import GENESIS_HASH
from tracker.ingest import ingest_lines
from tracker.signing import SigningError, generate_key, load_signing_key, load_verify_key, signed_bytes, verify_document
from tracker.store import export, open_database
from tracker.store.checkpoints import make_checkpoint
from tracker.store.export import ExportFiles, ExportSelection, LineFormat, export_events, export_to_files
from tracker.store.schema import run_events
from tracker.synthetic import snapshot_stream

DOC = Path(__file__).resolve().parent.parent / "docs" / "audit.md"
# Three ingests, each at its own time: recorded_at tells the batches apart.
BATCH_TIMES = (1_800_000_000.0, 1_800_000_100.0, 1_800_000_200.0)
EXPORTED_AT = 1_800_001_000.0
FORMATS: tuple[LineFormat, ...] = ("jsonl", "csv")


def _doc_block(heading: str, language: str) -> str:
    """The first ``language`` code block of docs/audit.md after the line ``heading``."""
    text_ = DOC.read_text(encoding="utf-8")
    start = text_.index(heading)
    found = re.compile(rf"^```{language}\n(.*?)^```$", re.S | re.M).search(text_, start)
    assert found is not None, f"docs/audit.md has no ```{language} block after {heading!r}"
    return found.group(1)


VERIFY_SCRIPT = _doc_block("### Checking an export with Python alone", "python")
OPENSSL_STEPS = _doc_block("**The signature**", "sh")


def _ingest(engine: Engine, runs: int, seed: int = 5) -> None:
    lines = [json.dumps(record).encode() for record in snapshot_stream(runs, seed=seed)]
    third = len(lines) // 3
    for index, moment in enumerate(BATCH_TIMES):
        batch = lines[index * third : (index + 1) * third if index < 2 else None]
        ingest_lines(engine, batch, lambda moment=moment: moment, source={"ingest": "test"})


@pytest.fixture
def log(engine: Engine) -> list[dict[str, Any]]:
    """An intact log ingested in three batches; returns its rows in seq order."""
    _ingest(engine, 6)
    rows = _rows(engine)
    assert len(rows) >= 60
    assert {row["recorded_at"] for row in rows} == set(BATCH_TIMES)
    return rows


def _rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(run_events).order_by(run_events.c.seq))]


def _export(
    engine: Engine,
    where: Path,
    selection: ExportSelection | None = None,
    line_format: LineFormat = "jsonl",
    name: str | None = None,
    **options: Any,
) -> ExportFiles:
    path = where / (name or f"export.{line_format}")
    return export_to_files(engine, path, selection or ExportSelection(), line_format, lambda: EXPORTED_AT, **options)


def _records(files: ExportFiles) -> list[dict[str, Any]]:
    """The export's lines, parsed as an auditor would."""
    if files.result.line_format == "jsonl":
        return [json.loads(line) for line in files.export.read_bytes().split(b"\n") if line]
    with files.export.open(encoding="utf-8", newline="") as handle:
        return [{**row, "seq": int(row["seq"])} for row in csv.DictReader(handle)]


def _check(manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run docs/audit.md's verify_export.py on ``manifest`` with nothing but the standard library."""
    script = manifest.parent / "verify_export.py"
    if not script.exists():
        script.write_text(VERIFY_SCRIPT, encoding="utf-8")
    command = [sys.executable, "-I", "-S", str(script), str(manifest), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


def _assert_ok(files: ExportFiles, *args: str) -> str:
    checked = _check(files.manifest, *args)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"ok: {files.result.events} events")
    return checked.stdout


def _assert_rejected(manifest: Path, reason: str, *args: str) -> None:
    checked = _check(manifest, *args)
    assert checked.returncode == 1, checked.stdout
    assert reason in checked.stderr, checked.stderr


# --- what an export holds ------------------------------------------------------------------------------


@pytest.mark.parametrize("line_format", FORMATS)
def test_a_whole_log_exports_as_one_contiguous_piece_of_chain(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path, line_format: LineFormat
) -> None:
    files = _export(engine, tmp_path, line_format=line_format)
    document = json.loads(files.manifest.read_text(encoding="utf-8"))
    assert document == files.document
    assert document["format"] == "tracker.export/1"
    assert document["file"] == files.export.name and files.manifest.name == files.export.name + ".manifest.json"
    assert document["format_of_lines"] == line_format
    assert (document["events"], document["contiguous"]) == (len(log), True)
    assert (document["first_seq"], document["last_seq"]) == (1, len(log))
    assert document["first_prev_hash"] == GENESIS_HASH
    assert (document["first_hash"], document["last_hash"]) == (log[0]["hash"], log[-1]["hash"])
    assert document["log_id"] == log[0]["hash"]
    assert document["exported_at"] == "2027-01-15T08:16:40.000000Z"
    data = files.export.read_bytes()
    assert (document["bytes"], document["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert "key_id" not in document and "signature" not in document
    _assert_ok(files)


@pytest.mark.parametrize("line_format", FORMATS)
def test_every_exported_body_hashes_to_the_stored_hash(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path, line_format: LineFormat
) -> None:
    records = _records(_export(engine, tmp_path, line_format=line_format))
    assert [record["seq"] for record in records] == [row["seq"] for row in log]
    for record, row in zip(records, log, strict=True):
        assert list(record) == ["seq", "prev_hash", "hash", "body"]
        assert (record["prev_hash"], record["hash"]) == (row["prev_hash"], row["hash"])
        assert hashlib.sha256(f"{record['prev_hash']}\n{record['body']}".encode()).hexdigest() == row["hash"]


def test_jsonl_lines_and_csv_records_carry_the_same_values(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    as_jsonl = _records(_export(engine, tmp_path, line_format="jsonl"))
    as_csv = _records(_export(engine, tmp_path, line_format="csv"))
    assert as_jsonl == as_csv
    header = (tmp_path / "export.csv").read_bytes().split(b"\r\n")[0]
    assert header == b"seq,prev_hash,hash,body"


@pytest.mark.parametrize("line_format", FORMATS)
def test_non_ascii_text_and_line_separators_survive(engine: Engine, tmp_path: Path, line_format: LineFormat) -> None:
    # U+2028 is a line break to str.splitlines but not to JSON Lines or CSV readers; é stays itself.
    record = next(iter(snapshot_stream(1)))
    record["run"]["note"] = "caf\u00e9\u2028\u2713\r\n"
    ingest_lines(engine, [json.dumps(record).encode()], lambda: BATCH_TIMES[0], source={"ingest": "test"})
    files = _export(engine, tmp_path, line_format=line_format)
    assert "caf\u00e9\u2028\u2713" in files.export.read_text(encoding="utf-8")
    assert any('"note":"caf\u00e9\u2028\u2713\\r\\n"' in line["body"] for line in _records(files))
    _assert_ok(files)


@pytest.mark.parametrize("line_format", FORMATS)
def test_a_seq_range_includes_both_ends(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path, line_format: LineFormat
) -> None:
    files = _export(engine, tmp_path, ExportSelection(from_seq=10, to_seq=30), line_format)
    assert [record["seq"] for record in _records(files)] == list(range(10, 31))
    document = files.document
    assert (document["first_seq"], document["last_seq"], document["contiguous"]) == (10, 30, True)
    assert document["first_prev_hash"] == log[8]["hash"]
    assert document["selection"] == {
        "since": None, "until": None, "from_seq": 10, "to_seq": 30, "run": [], "thread": [],
    }  # fmt: skip
    _assert_ok(files)


def test_a_time_range_selects_by_recorded_at_since_included_until_not(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    middle = ExportSelection(since=BATCH_TIMES[1], until=BATCH_TIMES[2])
    files = _export(engine, tmp_path, middle)
    expected = [row["seq"] for row in log if row["recorded_at"] == BATCH_TIMES[1]]
    assert [record["seq"] for record in _records(files)] == expected
    assert files.document["contiguous"] is True
    assert files.document["selection"]["since"] == "2027-01-15T08:01:40.000000Z"
    _assert_ok(files)


def test_a_run_export_holds_that_run_and_is_not_contiguous(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    run_id = log[0]["run_id"]
    files = _export(engine, tmp_path, ExportSelection(runs=(run_id,)))
    seqs = [record["seq"] for record in _records(files)]
    assert seqs == [row["seq"] for row in log if row["run_id"] == run_id]
    assert files.document["contiguous"] is False
    _assert_ok(files)


def test_runs_and_threads_combine_any_within_an_option_all_across(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    first, second = log[0], next(row for row in log if row["thread_id"] != log[0]["thread_id"])
    both_runs = ExportSelection(runs=(first["run_id"], second["run_id"]))
    seqs = [record["seq"] for record in _records(_export(engine, tmp_path, both_runs, name="runs.jsonl"))]
    assert seqs == [row["seq"] for row in log if row["run_id"] in (first["run_id"], second["run_id"])]
    run_and_thread = ExportSelection(runs=(first["run_id"],), threads=(second["thread_id"],))
    assert _export(engine, tmp_path, run_and_thread, name="none.jsonl").result.events == 0
    by_thread = _export(engine, tmp_path, ExportSelection(threads=(second["thread_id"],)), name="thread.jsonl")
    assert [record["seq"] for record in _records(by_thread)] == [
        row["seq"] for row in log if row["thread_id"] == second["thread_id"]
    ]


def test_a_filter_that_happens_to_cover_a_whole_range_is_contiguous(engine: Engine, tmp_path: Path) -> None:
    # Contiguity is checked against the log, not inferred from the options: one run's first event is
    # seq 1 of a log holding one run only.
    _ingest(engine, 1)
    run_id = _rows(engine)[0]["run_id"]
    assert _export(engine, tmp_path, ExportSelection(runs=(run_id,))).document["contiguous"] is True


@pytest.mark.parametrize("line_format", FORMATS)
def test_an_empty_selection_writes_an_empty_export(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path, line_format: LineFormat
) -> None:
    files = _export(engine, tmp_path, ExportSelection(from_seq=len(log) + 1), line_format)
    assert files.export.read_bytes() == (b"" if line_format == "jsonl" else b"seq,prev_hash,hash,body\r\n")
    document = files.document
    assert (document["events"], document["contiguous"], document["first_seq"], document["last_hash"]) == (
        0, False, None, None,
    )  # fmt: skip
    _assert_ok(files)


def test_the_manifest_holds_no_float(engine: Engine, log: list[dict[str, Any]], tmp_path: Path) -> None:
    files = _export(engine, tmp_path, ExportSelection(since=BATCH_TIMES[0] + 0.5, until=BATCH_TIMES[2]))

    def floats(value: Any) -> list[float]:
        if isinstance(value, dict):
            return [found for item in value.values() for found in floats(item)]
        if isinstance(value, list):
            return [found for item in value for found in floats(item)]
        return [value] if isinstance(value, float) else []

    assert floats(json.loads(files.manifest.read_text(encoding="utf-8"))) == []
    assert files.document["selection"]["since"] == "2027-01-15T08:00:00.500000Z"


# --- the doc's script rejects every kind of damage, naming the line ------------------------------------


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _first_line(line_format: LineFormat) -> int:
    """The file line of the first event (CSV has its header first)."""
    return 1 if line_format == "jsonl" else 2


@pytest.mark.parametrize("line_format", FORMATS)
def test_a_byte_changed_in_a_body_is_named(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path, line_format: LineFormat
) -> None:
    files = _export(engine, tmp_path, line_format=line_format)
    lines = _lines(files.export)
    index = _first_line(line_format) - 1 + 4  # the fifth event
    assert b"thread.run" in lines[index]
    lines[index] = lines[index].replace(b"thread.run", b"thread.rux", 1)
    files.export.write_bytes(b"".join(lines))
    _assert_rejected(files.manifest, f"line {index + 1}: hash does not match prev_hash and body (seq 5)")


@pytest.mark.parametrize("line_format", FORMATS)
def test_a_line_deleted_in_the_middle_is_named(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path, line_format: LineFormat
) -> None:
    files = _export(engine, tmp_path, line_format=line_format)
    lines = _lines(files.export)
    index = _first_line(line_format) - 1 + 9  # seq 10
    del lines[index]
    files.export.write_bytes(b"".join(lines))
    _assert_rejected(files.manifest, f"line {index + 1}: seq 10..10 missing from a contiguous export")


@pytest.mark.parametrize("line_format", FORMATS)
def test_two_lines_swapped_are_named(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path, line_format: LineFormat
) -> None:
    files = _export(engine, tmp_path, line_format=line_format)
    lines = _lines(files.export)
    index = _first_line(line_format) - 1 + 9
    lines[index], lines[index + 1] = lines[index + 1], lines[index]
    files.export.write_bytes(b"".join(lines))
    _assert_rejected(files.manifest, f"line {index + 1}: ")


@pytest.mark.parametrize("line_format", FORMATS)
def test_the_last_line_cut_off_is_named(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path, line_format: LineFormat
) -> None:
    files = _export(engine, tmp_path, line_format=line_format)
    lines = _lines(files.export)
    files.export.write_bytes(b"".join(lines)[:-20])
    _assert_rejected(files.manifest, f"line {len(lines)}: cut off")


@pytest.mark.parametrize("line_format", FORMATS)
def test_the_last_line_removed_whole_disagrees_with_the_manifest(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path, line_format: LineFormat
) -> None:
    files = _export(engine, tmp_path, line_format=line_format)
    files.export.write_bytes(b"".join(_lines(files.export)[:-1]))
    _assert_rejected(files.manifest, "manifest: ")


def test_a_line_whose_seq_was_edited_outside_the_body_is_named(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    files = _export(engine, tmp_path, ExportSelection(runs=(log[0]["run_id"],)))
    lines = _lines(files.export)
    record = json.loads(lines[1])
    lines[1] = lines[1].replace(f'{{"seq":{record["seq"]},'.encode(), f'{{"seq":{record["seq"] + 1},'.encode())
    files.export.write_bytes(b"".join(lines))
    _assert_rejected(files.manifest, f"line 2: seq {record['seq'] + 1} differs from the body's seq")


def test_an_edited_manifest_sha256_is_named(engine: Engine, log: list[dict[str, Any]], tmp_path: Path) -> None:
    files = _export(engine, tmp_path)
    document = dict(files.document, sha256="0" * 64)
    files.manifest.write_text(json.dumps(document), encoding="utf-8")
    _assert_rejected(files.manifest, "manifest: sha256 is '" + "0" * 64)


def test_an_altered_line_of_a_run_export_is_named(engine: Engine, log: list[dict[str, Any]], tmp_path: Path) -> None:
    files = _export(engine, tmp_path, ExportSelection(runs=(log[0]["run_id"],)))
    lines = _lines(files.export)
    assert len(lines) >= 3
    lines[2] = lines[2].replace(b"thread.run", b"thread.rux", 1)
    files.export.write_bytes(b"".join(lines))
    _assert_rejected(files.manifest, "line 3: hash does not match prev_hash and body")


def test_swapped_lines_of_a_run_export_are_named(engine: Engine, log: list[dict[str, Any]], tmp_path: Path) -> None:
    files = _export(engine, tmp_path, ExportSelection(runs=(log[0]["run_id"],)))
    lines = _lines(files.export)
    lines[1], lines[2] = lines[2], lines[1]
    files.export.write_bytes(b"".join(lines))
    _assert_rejected(files.manifest, "line 3: seq ")


# --- checkpoints -----------------------------------------------------------------------------------


def _checkpoint(engine: Engine, tmp_path: Path, name: str, **changes: Any) -> Path:
    key_path = tmp_path / "audit.key"
    if not key_path.exists():
        generate_key(key_path)
    document = {**make_checkpoint(engine, load_signing_key(key_path), lambda: EXPORTED_AT), **changes}
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_an_export_agrees_with_the_checkpoint_of_its_last_event(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    checkpoint = _checkpoint(engine, tmp_path, "head.json")
    files = _export(engine, tmp_path)
    assert _assert_ok(files, "--checkpoint", str(checkpoint)).strip() == (
        f"ok: {len(log)} events, seq {len(log)} is the checkpoint's"
    )


def test_an_export_agrees_with_a_checkpoint_inside_it(engine: Engine, tmp_path: Path) -> None:
    _ingest(engine, 3, seed=1)
    checkpoint = _checkpoint(engine, tmp_path, "older.json")
    _ingest(engine, 3, seed=2)
    _assert_ok(_export(engine, tmp_path), "--checkpoint", str(checkpoint))


def test_a_checkpoint_that_signed_another_head_is_a_disagreement(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    checkpoint = _checkpoint(engine, tmp_path, "forged.json", head_hash="f" * 64)
    files = _export(engine, tmp_path)
    _assert_rejected(
        files.manifest, f"line {len(log)}: seq {len(log)} is not the event", "--checkpoint", str(checkpoint)
    )


def test_a_checkpoint_beyond_the_export_cannot_agree(engine: Engine, log: list[dict[str, Any]], tmp_path: Path) -> None:
    checkpoint = _checkpoint(engine, tmp_path, "head.json")
    files = _export(engine, tmp_path, ExportSelection(to_seq=len(log) - 1))
    _assert_rejected(
        files.manifest, f"checkpoint: its seq {len(log)} is not in the export", "--checkpoint", str(checkpoint)
    )


def test_a_checkpoint_of_another_log_is_a_disagreement(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    checkpoint = _checkpoint(engine, tmp_path, "other.json", log_id="e" * 64)
    _assert_rejected(
        _export(engine, tmp_path).manifest, "checkpoint: it is of another log", "--checkpoint", str(checkpoint)
    )


# --- the signature ---------------------------------------------------------------------------------


@pytest.fixture
def signed(engine: Engine, log: list[dict[str, Any]], tmp_path: Path) -> ExportFiles:
    """A signed export named as docs/audit.md names it, with the key pair audit.key / audit.key.pub."""
    generate_key(tmp_path / "audit.key")
    return _export(engine, tmp_path, name="2026-q1.jsonl", key=load_signing_key(tmp_path / "audit.key"))


def test_the_manifest_signature_verifies_with_the_public_key(signed: ExportFiles, tmp_path: Path) -> None:
    document = json.loads(signed.manifest.read_text(encoding="utf-8"))
    key = load_verify_key(tmp_path / "audit.key.pub")
    assert document["key_id"] == key.key_id
    verify_document(document, key, "the manifest")
    # What docs/audit.md says to sign with openssl: json.dumps of the parsed manifest, sorted and compact.
    unsigned = {name: value for name, value in document.items() if name != "signature"}
    plain = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert signed_bytes(document) == plain
    edited = dict(document, events=document["events"] - 1)
    with pytest.raises(SigningError, match="bad signature"):
        verify_document(edited, key, "the manifest")


def _openssl_steps(directory: Path) -> subprocess.CompletedProcess[str]:
    """docs/audit.md's signature commands, as written, in ``directory`` (python3 is this interpreter)."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(sys.executable)
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-e", "-c", OPENSSL_STEPS],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_the_manifest_signature_verifies_with_the_openssl_command(signed: ExportFiles, tmp_path: Path) -> None:
    verified = _openssl_steps(tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "Signature Verified Successfully" in verified.stdout
    document = json.loads(signed.manifest.read_text(encoding="utf-8"))
    signed.manifest.write_text(json.dumps(dict(document, last_seq=document["last_seq"] + 1)), encoding="utf-8")
    refused = _openssl_steps(tmp_path)
    assert refused.returncode != 0
    assert "Signature Verified Successfully" not in refused.stdout


# --- a tampered log is exported as stored ---------------------------------------------------------


def _unguard(engine: Engine) -> None:
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            for trigger in ("trg_run_events_no_update", "trg_run_events_no_delete", "trg_run_events_no_replace"):
                connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
        else:
            connection.exec_driver_sql("ALTER TABLE run_events DISABLE TRIGGER ALL")


def _set_data_text(engine: Engine, seq: int, data_text: str) -> None:
    cast = "CAST(:data AS json)" if engine.dialect.name == "postgresql" else ":data"
    with engine.begin() as connection:
        connection.execute(
            text(f"UPDATE run_events SET data = {cast} WHERE seq = :seq"), {"data": data_text, "seq": seq}
        )


def test_a_tampered_row_is_exported_as_stored_and_reported(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    _unguard(engine)
    data = json.loads(log[6]["data"]) if isinstance(log[6]["data"], str) else log[6]["data"]
    _set_data_text(engine, 7, json.dumps({**data, "forged": True}, sort_keys=True, separators=(",", ":")))
    files = _export(engine, tmp_path)
    assert (files.result.first_bad_seq, files.result.problem) == (7, "hash does not match the event's content")
    record = _records(files)[6]
    assert '"forged":true' in record["body"] and record["hash"] == log[6]["hash"]
    _assert_rejected(files.manifest, "line 7: hash does not match prev_hash and body (seq 7)")


def test_stored_text_that_is_not_canonical_is_exported_canonically(
    engine: Engine, log: list[dict[str, Any]], tmp_path: Path
) -> None:
    # The same value with spaces in its text: audit verify's recipe accepts it, and so does the export.
    _unguard(engine)
    data = json.loads(log[6]["data"]) if isinstance(log[6]["data"], str) else log[6]["data"]
    _set_data_text(engine, 7, json.dumps(data, sort_keys=False))
    files = _export(engine, tmp_path)
    assert files.result.first_bad_seq is None
    assert _records(files)[6]["hash"] == log[6]["hash"]
    _assert_ok(files)


# --- the command line ------------------------------------------------------------------------------


def _cli(db_url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--database-url", db_url, "audit", "export", *args], catch_exceptions=False)


def test_the_command_writes_both_files_and_says_so(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url)
    try:
        _ingest(engine, 3)
    finally:
        engine.dispose()
    out = tmp_path / "range.csv"
    result = _cli(db_url, "--out", str(out), "--format", "csv", "--from-seq", "2", "--to-seq", "9")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "range.csv.manifest.json").read_text(encoding="utf-8"))
    assert result.stdout.strip() == (
        f"exported 8 events to {out} (manifest {out}.manifest.json; sha256 {document['sha256']})"
    )
    assert (document["first_seq"], document["last_seq"], document["format_of_lines"]) == (2, 9, "csv")
    checked = _check(tmp_path / "range.csv.manifest.json")
    assert checked.returncode == 0 and checked.stdout.startswith("ok: 8 events")


def test_the_command_never_overwrites_an_export_or_a_manifest(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    out.write_text("evidence\n")
    result = _cli(db_url, "--out", str(out))
    assert result.exit_code == 2
    assert "--out" in result.output and "already exists" in result.output
    assert out.read_text() == "evidence\n"
    manifest = tmp_path / "y.jsonl.manifest.json"
    manifest.write_text("evidence\n")
    result = _cli(db_url, "--out", str(tmp_path / "y.jsonl"))
    assert result.exit_code == 2
    assert "--manifest" in result.output and "already exists" in result.output
    assert manifest.read_text() == "evidence\n" and not (tmp_path / "y.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--since", "yesterday"], "--since"),
        (["--since", "2026-01-02", "--until", "2026-01-01"], "--until"),
        (["--from-seq", "9", "--to-seq", "3"], "--to-seq"),
        (["--to-seq", "-1"], "--to-seq"),
    ],
)
def test_bad_options_are_named(db_url: str, tmp_path: Path, args: list[str], option: str) -> None:
    result = _cli(db_url, "--out", str(tmp_path / "e.jsonl"), *args)
    assert result.exit_code == 2
    assert option in result.output
    assert not (tmp_path / "e.jsonl").exists()


def test_signing_needs_a_key_and_says_where(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACKER_SIGNING_KEY", raising=False)
    result = _cli(db_url, "--out", str(tmp_path / "s.jsonl"), "--sign")
    assert result.exit_code == 1
    assert "TRACKER_SIGNING_KEY" in result.output
    assert not (tmp_path / "s.jsonl").exists()
    generate_key(tmp_path / "k")
    monkeypatch.setenv("TRACKER_SIGNING_KEY", str(tmp_path / "k"))
    result = _cli(db_url, "--out", str(tmp_path / "s.jsonl"), "--sign", "--manifest", str(tmp_path / "m.json"))
    assert result.exit_code == 0, result.output
    verify_document(json.loads((tmp_path / "m.json").read_text()), load_verify_key(tmp_path / "k.pub"))


def test_no_database_url_or_password_reaches_the_files(db_url: str, backend: str, tmp_path: Path) -> None:
    password = "s3cret-Pa55word"
    url = db_url
    if backend == "postgresql":  # the test server trusts loopback, so any password connects
        url = make_url(db_url).set(password=password).render_as_string(hide_password=False)
    engine = open_database(url)
    try:
        _ingest(engine, 2)
    finally:
        engine.dispose()
    out = tmp_path / "p.jsonl"
    generate_key(tmp_path / "k")
    result = _cli(url, "--out", str(out), "--key", str(tmp_path / "k"))
    assert result.exit_code == 0, result.output
    secret_key = (tmp_path / "k").read_text()
    database = make_url(db_url).database or ""
    for written in (out.read_text(), (tmp_path / "p.jsonl.manifest.json").read_text(), result.output):
        assert password not in written
        assert database not in written
        assert secret_key.splitlines()[1] not in written


# --- streaming -------------------------------------------------------------------------------------


class _CountingSink(io.BytesIO):
    """Keeps nothing: counts the writes and their sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []
        self.digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.writes.append(len(data))
        self.digest.update(data)
        return len(data)


def test_a_large_export_streams_in_pages(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    _ingest(engine, 1_750)
    events = len(_rows(engine))
    assert events >= 20_000
    monkeypatch.setattr(export, "_PAGE", 1_000)
    sink = _CountingSink()
    started = time.perf_counter()
    tracemalloc.start()
    try:
        result = export_events(engine, sink, ExportSelection())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert (result.events, result.contiguous, result.first_bad_seq) == (events, True, None)
    assert result.sha256 == sink.digest.hexdigest() and result.bytes == sum(sink.writes)
    assert len(sink.writes) == -(-events // 1_000)
    # Memory follows the page, not the log: a page of 1,000 events is a fraction of the export's bytes.
    assert peak < result.bytes / 4, (peak, result.bytes)
    print(f"exported {events} events ({result.bytes} bytes) in {elapsed:.2f} s, peak traced {peak / 1e6:.1f} MB")
