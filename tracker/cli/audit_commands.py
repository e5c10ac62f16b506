"""``tracker audit``: verify the chain, sign checkpoints, and the keys they need (docs/audit.md)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from tracker.cli.base import Context, cli, format_option
from tracker.cli.render import emit_json
from tracker.signing import KEY_ENV, PUBLIC_KEY_ENV, generate_key, load_signing_key, load_verify_key
from tracker.store.audit import ChainReport, verify_chain
from tracker.store.checkpoints import CheckpointResult, check_checkpoints, make_checkpoint, read_checkpoint


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
    "public_key_path",
    type=click.Path(dir_okay=False),
    help=f"The trusted public key (.pub) checkpoints must be signed with; default ${PUBLIC_KEY_ENV}.",
)


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
    obj: Context, checkpoint_paths: tuple[str, ...], public_key_path: str | None, output_format: str, as_json: bool
) -> None:
    """Recompute the hash chain; exit 1 naming the first bad seq if anything was tampered with.

    With --checkpoint, also exit 1 when the log no longer extends a signed checkpoint: its tail was cut,
    or the chain was rewritten and rehashed.
    """
    key = load_verify_key(public_key_path) if checkpoint_paths else None
    checkpoints = [(path, read_checkpoint(path)) for path in checkpoint_paths]
    report = verify_chain(obj.engine)
    results = check_checkpoints(obj.engine, report, checkpoints, key) if key is not None else []
    ok = report.ok and all(result.ok for result in results)
    if as_json or output_format == "json":
        emit_json({**_report_dict(report), "ok": ok, "checkpoints": [result.as_dict() for result in results]})
    else:
        _print_report(report, results)
    if not ok:
        sys.exit(1)


def _report_dict(report: ChainReport) -> dict[str, Any]:
    return {
        "chain_ok": report.ok,
        "events": report.events,
        "head_seq": report.head_seq,
        "head_hash": report.head_hash,
        "first_bad_seq": report.first_bad_seq,
        "problem": report.problem,
        "gaps": [list(gap) for gap in report.gaps],
        "purged_through_seq": report.anchor[0] if report.purge is not None else None,
    }


def _print_report(report: ChainReport, results: list[CheckpointResult]) -> None:
    if report.purge is not None:
        click.echo(
            f"purged: seq 1..{report.anchor[0]} ({report.purge.get('events_purged')} events recorded before "
            f"{report.purge.get('before')}), archived as {report.purge.get('archive', {}).get('file')}"
        )
    if report.ok:
        click.echo(f"ok: {report.events} events, chain intact, head seq {report.head_seq} hash {report.head_hash}")
    else:
        for first, last in report.gaps:
            click.echo(f"gap: seq {first}..{last} missing", err=True)
        click.echo(f"tracker: error: chain broken at seq {report.first_bad_seq}: {report.problem}", err=True)
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
@click.pass_obj
def audit_checkpoint(obj: Context, key_path: str | None, out_path: str, since_path: str | None, merkle: bool) -> None:
    """Verify the chain and sign its head (seq, hash, time, event count) with an Ed25519 key.

    Store the output somewhere the database's operators cannot rewrite (docs/audit.md); `audit verify
    --checkpoint` then proves the log still extends it.
    """
    key = load_signing_key(key_path)
    since = read_checkpoint(since_path) if since_path else None
    document = make_checkpoint(obj.engine, key, time.time, since=since, merkle=merkle)
    if out_path == "-":
        emit_json(document)
        return
    _write_new(Path(out_path), document)
    click.echo(f"checkpoint of seq {document['seq']} written to {out_path}", err=True)


def _write_new(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as JSON to a new file; never over an existing one (a checkpoint is evidence)."""
    import json

    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        message = f"{path} already exists; checkpoints are never overwritten"
        raise click.BadParameter(message, param_hint="--out") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
