"""The ``tracker`` command line: parse, call the library, render. No logic of its own."""

from __future__ import annotations

from tracker.cli import (
    audit_commands,
    db_roles_command,
    export_command,
    ledger_commands,
    report_commands,
    simulate_command,
    sync_commands,
    webhook_command,
)
from tracker.cli.base import cli

__all__ = [
    "audit_commands",
    "cli",
    "db_roles_command",
    "export_command",
    "ledger_commands",
    "main",
    "report_commands",
    "simulate_command",
    "sync_commands",
    "webhook_command",
]


def main() -> None:
    cli(prog_name="tracker")
