"""``tracker audit export``: the events of a range as JSON Lines or CSV, with a manifest (docs/audit.md)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from tracker.cli.audit_commands import audit
from tracker.cli.base import Context, time_value
from tracker.signing import KEY_ENV, load_signing_key
from tracker.store.export import (
    LINE_FORMATS,
    ExportExists,
    ExportSelection,
    LineFormat,
    default_manifest_path,
    export_to_files,
)


def _selection(
    since: str | None,
    until: str | None,
    from_seq: int | None,
    to_seq: int | None,
    runs: tuple[str, ...],
    threads: tuple[str, ...],
) -> ExportSelection:
    selection = ExportSelection(
        time_value(since, "--since"), time_value(until, "--until"), from_seq, to_seq, runs, threads
    )
    if selection.from_seq is not None and selection.to_seq is not None and selection.from_seq > selection.to_seq:
        raise click.BadParameter(f"--from-seq {from_seq} is after --to-seq {to_seq}", param_hint="--to-seq")
    if selection.since is not None and selection.until is not None and selection.since >= selection.until:
        raise click.BadParameter(f"{until!r} is not after --since {since!r}", param_hint="--until")
    return selection


@audit.command("export")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the events to this new file (an existing file is never overwritten).",
)
@click.option(
    "--format",
    "line_format",
    type=click.Choice(LINE_FORMATS),
    default="jsonl",
    show_default=True,
    help="JSON Lines, or CSV with the header seq,prev_hash,hash,body.",
)
@click.option(
    "--since", help="Only events recorded at or after this time (ISO-8601, UTC if no zone, or epoch seconds)."
)
@click.option("--until", help="Only events recorded before this time (same forms as --since).")
@click.option("--from-seq", type=click.IntRange(min=0), help="Only events at this seq or later.")
@click.option("--to-seq", type=click.IntRange(min=0), help="Only events at this seq or earlier.")
@click.option("--run", "runs", multiple=True, help="Only the events of this run (repeatable: any of them).")
@click.option("--thread", "threads", multiple=True, help="Only the events of this thread (repeatable: any of them).")
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="Sign the manifest with this Ed25519 private key (from `tracker audit keygen`).",
)
@click.option("--sign", is_flag=True, help=f"Sign the manifest with the private key at ${KEY_ENV}.")
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the manifest here (default: the --out file's name + .manifest.json).",
)
@click.pass_obj
def audit_export(
    obj: Context,
    out_path: Path,
    line_format: LineFormat,
    since: str | None,
    until: str | None,
    from_seq: int | None,
    to_seq: int | None,
    runs: tuple[str, ...],
    threads: tuple[str, ...],
    key_path: str | None,
    sign: bool,
    manifest_path: Path | None,
) -> None:
    """Export events (seq, prev_hash, hash, canonical body) and a manifest an auditor checks with Python alone.

    Filters combine: every one given must hold. --since/--until select by the ledger's own clock
    (recorded_at), --from-seq/--to-seq include both ends; --run and --thread pick events that are not
    contiguous in the chain. The manifest holds the counts, the first and last hashes, the file's
    SHA-256, and with --key or --sign an Ed25519 signature. docs/audit.md shows how to check both files.
    """
    selection = _selection(since, until, from_seq, to_seq, runs, threads)
    manifest_path = default_manifest_path(out_path) if manifest_path is None else manifest_path
    for path, option in ((out_path, "--out"), (manifest_path, "--manifest")):
        if path.exists():
            raise click.BadParameter(f"{path} already exists; exports are never overwritten", param_hint=option)
    key = load_signing_key(key_path) if key_path is not None or sign else None
    try:
        files = export_to_files(
            obj.engine, out_path, selection, line_format, time.time, manifest_path=manifest_path, key=key
        )
    except ExportExists as exc:
        option = "--out" if exc.path == out_path else "--manifest"
        raise click.BadParameter(str(exc), param_hint=option) from None
    result = files.result
    if result.first_bad_seq is not None:
        click.echo(
            f"tracker: warning: exported as stored, but the chain does not hold at seq {result.first_bad_seq} "
            f"({result.problem}); `tracker audit verify` says more",
            err=True,
        )
    signed = f", signed by {files.document['key_id']}" if "key_id" in files.document else ""
    click.echo(
        f"exported {result.events} events to {files.export} (manifest {files.manifest}{signed}; sha256 {result.sha256})"
    )
