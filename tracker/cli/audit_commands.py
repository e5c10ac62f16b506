"""``tracker audit``: verify the chain, sign checkpoints, and the keys they need (docs/audit.md)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from tracker.cli.base import Context, cli, format_option, time_value
from tracker.cli.render import emit_json
from tracker.errors import AuditError
from tracker.signing import KEY_ENV, PUBLIC_KEY_ENV, VerifyKey, generate_key, load_signing_key, load_verify_keys
from tracker.store.audit import ChainReport, verify_chain
from tracker.store.checkpoints import (
    CheckpointResult,
    check_checkpoints,
    check_erasures,
    check_purge,
    make_checkpoint,
    read_checkpoint,
    write_new_checkpoint,
)


@cli.group()
def audit() -> None:
    """Check the integrity of the ledger; sign checkpoints an auditor keeps elsewhere."""


key_option = click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help=f"Ed25519 private key (from `tracker audit keygen`); default ${KEY_ENV}.",
)
public_key_option = click.option(
    "--public-key",
    "public_key_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    help=f"A trusted public key (.pub); repeat it for the keys a rotated key replaced. Default: the "
    f"paths in ${PUBLIC_KEY_ENV} (separated by :).",
)
trusted_key_option = click.option(
    "--trusted-key",
    "trusted_key_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    help=f"An earlier (rotated) public key whose signatures on purges and checkpoints to accept; "
    f"repeatable. Default: the paths in ${PUBLIC_KEY_ENV}.",
)


def _required_keys(paths: tuple[str, ...]) -> list[VerifyKey]:
    keys = load_verify_keys(paths)
    if not keys:
        raise AuditError(f"a public key is needed: give --public-key or set ${PUBLIC_KEY_ENV}")
    return keys


@audit.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A signed checkpoint the log must still extend (repeatable); needs the public key.",
)
@public_key_option
@format_option
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.pass_obj
def audit_verify(
    obj: Context,
    checkpoint_paths: tuple[str, ...],
    public_key_paths: tuple[str, ...],
    output_format: str,
    as_json: bool,
) -> None:
    """Recompute the hash chain; exit 1 naming the first bad seq if anything was tampered with.

    With --checkpoint, also exit 1 when the log no longer extends a signed checkpoint: its tail was cut,
    or the chain was rewritten and rehashed.
    """
    found = load_verify_keys(public_key_paths)
    if checkpoint_paths and not found:
        raise AuditError(f"--checkpoint needs the public key: give --public-key or set ${PUBLIC_KEY_ENV}")
    key = found or None
    checkpoints = [(path, read_checkpoint(path)) for path in checkpoint_paths]
    report = verify_chain(obj.engine)
    results = check_checkpoints(obj.engine, report, checkpoints, key) if key is not None else []
    purge = check_purge(report, key)
    if purge is not None:
        results.insert(0, purge)
    erasures = check_erasures(obj.engine, key) if key is not None else None
    if erasures is not None:
        results.append(erasures)
    ok = report.ok and all(result.ok for result in results)
    if as_json or output_format == "json":
        emit_json({**_report_dict(report), "ok": ok, "checkpoints": [result.as_dict() for result in results]})
    else:
        _print_report(report, results)
    if not ok:
        sys.exit(1)


def _report_dict(report: ChainReport) -> dict[str, Any]:
    return {
        "chain_ok": report.first_bad_seq is None and not report.gaps,
        "events": report.events,
        "head_seq": report.head_seq,
        "head_hash": report.head_hash,
        "first_bad_seq": report.first_bad_seq,
        "problem": report.problem,
        "gaps": [list(gap) for gap in report.gaps],
        "purged_through_seq": report.anchor[0] if report.purge is not None else None,
        "outside_problems": report.outside,
    }


def _print_report(report: ChainReport, results: list[CheckpointResult]) -> None:
    if report.purge is not None:
        archive = report.purge.get("archive")
        archive_file = archive.get("file") if isinstance(archive, dict) else None
        click.echo(
            f"purged: seq 1..{report.anchor[0]} ({report.purge.get('events_purged')} events recorded before "
            f"{report.purge.get('before')}), archived as {archive_file}"
        )
    if report.first_bad_seq is None and not report.gaps:
        click.echo(f"ok: {report.events} events, chain intact, head seq {report.head_seq} hash {report.head_hash}")
    else:
        for first, last in report.gaps:
            click.echo(f"gap: seq {first}..{last} missing", err=True)
        click.echo(f"tracker: error: chain broken at seq {report.first_bad_seq}: {report.problem}", err=True)
    for problem in report.outside:
        click.echo(f"tracker: error: {problem}", err=True)
    for result in results:
        line = f"checkpoint {result.name} (seq {result.seq}): {result.status}: {result.detail}"
        click.echo(line if result.ok else f"tracker: error: {line}", err=not result.ok)


@audit.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False))
def audit_keygen(path: str) -> None:
    """Write a new Ed25519 signing key to PATH (mode 0600) and its public half to PATH.pub.

    Keep the private key off the database host if you can, and give auditors the .pub file.
    """
    public_path, key_id = generate_key(Path(path))
    click.echo(f"private key {path} (keep it secret), public key {public_path}, key id {key_id}")


@audit.command("checkpoint")
@key_option
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="Write the signed checkpoint here (- for stdout); an existing file is never overwritten.",
)
@click.option(
    "--since",
    "since_path",
    type=click.Path(dir_okay=False, exists=True),
    help="A previous checkpoint signed by the same key: verify only the events after it.",
)
@click.option("--merkle", is_flag=True, help="Also sign the RFC 6962 Merkle root of the log (audit prove).")
@trusted_key_option
@click.pass_obj
def audit_checkpoint(
    obj: Context,
    key_path: str | None,
    out_path: str,
    since_path: str | None,
    merkle: bool,
    trusted_key_paths: tuple[str, ...],
) -> None:
    """Verify the chain and sign its head (seq, hash, time, event count) with an Ed25519 key.

    Store the output somewhere the database's operators cannot rewrite (docs/audit.md); `audit verify
    --checkpoint` then proves the log still extends it.
    """
    key = load_signing_key(key_path)
    since = read_checkpoint(since_path) if since_path else None
    trusted = load_verify_keys(trusted_key_paths)
    document = make_checkpoint(obj.engine, key, time.time, since=since, merkle=merkle, trusted=trusted)
    if out_path == "-":
        emit_json(document)
        return
    try:
        write_new_checkpoint(Path(out_path), document)
    except AuditError as exc:  # an existing file: a usage error, like every other option's
        raise click.BadParameter(str(exc), param_hint="--out") from None
    click.echo(f"checkpoint of seq {document['seq']} written to {out_path}", err=True)


@audit.command("erase")
@click.option("--run", "run_ids", multiple=True, help="Erase the sensitive payloads of this run (repeatable).")
@click.option(
    "--field",
    "fields",
    multiple=True,
    help="Only payloads of this field (instructions, metadata, required_action, ...); alone: in every run.",
)
@click.option("--reason", required=True, help="Why (e.g. the erasure request's reference); signed into the chain.")
@key_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_obj
def audit_erase(
    obj: Context, run_ids: tuple[str, ...], fields: tuple[str, ...], reason: str, key_path: str | None, as_json: bool
) -> None:
    """Erase sensitive payload bodies (a data-protection request) and record it as signed, chained events.

    The chain stays verifiable: events only ever held digests of these values. The database files are
    compacted afterwards so the erased bytes cannot be read back from them (docs/audit.md says what
    remains elsewhere: backups, PostgreSQL WAL archives).
    """
    from tracker.store.erasure import erase_payloads

    key = load_signing_key(key_path)
    summary = erase_payloads(obj.engine, key, time.time, run_ids=run_ids, fields=fields, reason=reason)
    if as_json:
        emit_json(
            {
                "runs": summary.runs,
                "payloads": summary.payloads,
                "events_appended": summary.events_appended,
                "compacted": summary.compacted,
                "compaction_error": summary.compaction_error,
                "key_id": key.public.key_id,
            }
        )
    else:
        click.echo(
            f"erased {summary.payloads} payload bodies of {summary.runs} runs; {summary.events_appended} "
            f"payload_erased events appended, signed by {key.public.key_id}"
        )
    if summary.compaction_error is not None:
        click.echo(
            f"tracker: warning: the erasure is recorded, but the storage was not compacted "
            f"({summary.compaction_error}); run it as the table owner: see docs/audit.md",
            err=True,
        )


@audit.command("purge")
@click.option(
    "--before",
    required=True,
    help="Purge the events recorded before this time (ISO-8601 date or time, UTC unless a zone is given).",
)
@click.option(
    "--archive",
    "archive_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Write the purged events here first, as a signed, verifiable export (never overwritten).",
)
@click.option(
    "--checkpoint-out",
    "checkpoint_path",
    type=click.Path(dir_okay=False),
    help="Where the signed checkpoint of the purge point goes (default: ARCHIVE.checkpoint.json).",
)
@click.option(
    "--min-age-days",
    type=click.FloatRange(min=0),
    help="Refuse to purge anything younger (default $TRACKER_RETENTION_MIN_AGE_DAYS, else 183: six months).",
)
@key_option
@trusted_key_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_obj
def audit_purge(
    obj: Context,
    before: str,
    archive_path: str,
    checkpoint_path: str | None,
    min_age_days: float | None,
    key_path: str | None,
    as_json: bool,
    trusted_key_paths: tuple[str, ...],
) -> None:
    """Remove old events from the start of the log, after archiving them (retention).

    The only deletion the ledger allows: verified first, archived as a signed export, carried forward by
    a signed checkpoint and recorded in the chain. On PostgreSQL only the owner role may do it.
    """
    from tracker.store.retention import configured_min_age_days, purge

    key = load_signing_key(key_path)
    result = purge(
        obj.engine,
        key,
        time.time,
        before=time_value(before, "--before") or 0.0,
        min_age_days=configured_min_age_days(min_age_days),
        archive_path=Path(archive_path),
        checkpoint_path=Path(checkpoint_path) if checkpoint_path else None,
        trusted=load_verify_keys(trusted_key_paths),
    )
    summary = {
        "first_seq": result.first_seq,
        "through_seq": result.through_seq,
        "through_hash": result.through_hash,
        "events_purged": result.events_purged,
        "runs_archived": result.runs_archived,
        "archive": str(result.archive.export),
        "manifest": str(result.archive.manifest),
        "checkpoint": str(result.checkpoint_path),
    }
    if as_json:
        emit_json(summary)
        return
    click.echo(
        f"purged seq {result.first_seq}..{result.through_seq} ({result.events_purged} events; "
        f"{result.runs_archived} runs archived); archive {result.archive.export} (manifest "
        f"{result.archive.manifest}), checkpoint {result.checkpoint_path}"
    )


@audit.group("prove")
def audit_prove() -> None:
    """RFC 6962 Merkle proofs over the log (leaves: the event hashes in seq order; docs/audit.md)."""


@audit_prove.command("inclusion")
@click.argument("seq", type=click.IntRange(min=1))
@click.option("--tree-size", type=click.IntRange(min=1), help="The tree of the first N events (default: all).")
@click.pass_obj
def audit_prove_inclusion(obj: Context, seq: int, tree_size: int | None) -> None:
    """Prove that the event at SEQ is in the tree a checkpoint signed (JSON on stdout)."""
    from tracker.store.merkle_log import inclusion_proof

    emit_json(inclusion_proof(obj.engine, seq, tree_size))


@audit_prove.command("consistency")
@click.argument("old_size", type=click.IntRange(min=0))
@click.argument("new_size", type=click.IntRange(min=0), required=False)
@click.pass_obj
def audit_prove_consistency(obj: Context, old_size: int, new_size: int | None) -> None:
    """Prove that the tree of OLD_SIZE events is a prefix of the tree of NEW_SIZE (default: all)."""
    from tracker.store.merkle_log import consistency_proof

    emit_json(consistency_proof(obj.engine, old_size, new_size))


@audit.command("check-proof")
@click.argument("proof_path", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--checkpoint",
    "checkpoint_paths",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Signed --merkle checkpoint(s) whose root(s) the proof must reach (repeatable).",
)
@public_key_option
def audit_check_proof(proof_path: str, checkpoint_paths: tuple[str, ...], public_key_paths: tuple[str, ...]) -> None:
    """Check a proof from `audit prove` against signed checkpoints; needs no database.

    An inclusion proof needs the checkpoint of its tree size; a consistency proof the checkpoints of both
    sizes. Exit 0 when the proof holds, 1 otherwise.
    """
    from tracker.store.checkpoints import check_proof

    key = _required_keys(public_key_paths)
    checkpoints = [(path, read_checkpoint(path)) for path in checkpoint_paths]
    verdict = check_proof(_read_json(proof_path), checkpoints, key)
    click.echo(verdict)


def _read_json(path: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditError(f"{path}: cannot read a JSON proof: {exc}") from None
    if not isinstance(document, dict):
        raise AuditError(f"{path}: not a proof (expected a JSON object)")
    return document
