"""The redaction options shared by ``ingest`` and ``sync``: read the policy file and the salt, build the policy.

The salt comes from ``--redaction-salt-file`` or the environment (``TRACKER_REDACTION_SALT``); it is handed
to the policy as bytes and never echoed, not even in an error.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from tracker.errors import PolicyError
from tracker.redaction import SALT_ENV, RedactionPolicy, load_policy

F = TypeVar("F", bound=Callable[..., Any])


def redaction_options(function: F) -> F:
    """``--redaction FILE``, ``--redact PATH=ACTION``, ``--redaction-salt-file``: the command gets ``policy``."""

    @functools.wraps(function)
    def command(
        *args: Any, redaction: str | None, redact: tuple[str, ...], redaction_salt_file: str | None, **kwargs: Any
    ) -> Any:
        return function(*args, policy=policy_from_options(redaction, redact, redaction_salt_file), **kwargs)

    options = [
        click.option(
            "--redaction",
            type=click.Path(exists=True, dir_okay=False),
            envvar="TRACKER_REDACTION",
            help="Redaction policy (TOML, a [redact] table of PATH = keep|drop|hash) applied before anything is "
            "stored (env TRACKER_REDACTION; docs/redaction.md).",
        ),
        click.option(
            "--redact",
            multiple=True,
            metavar="PATH=ACTION",
            help="A redaction rule, e.g. metadata.user_email=hash (repeatable; overrides the file's rule for PATH).",
        ),
        click.option(
            "--redaction-salt-file",
            type=click.Path(exists=True, dir_okay=False),
            help=f"File holding the secret salt of hash rules (default: env {SALT_ENV}); never stored or printed.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return cast(F, command)


def policy_from_options(
    policy_file: str | None, rules: tuple[str, ...], salt_file: str | None
) -> RedactionPolicy | None:
    """The policy in force, or None when neither a policy file nor a rule was given."""
    if policy_file is None and not rules:
        return None
    text = None
    if policy_file is not None:
        try:
            text = Path(policy_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(
                f"{policy_file}: cannot read it ({type(exc).__name__})", param_hint="--redaction"
            ) from None
    try:
        return load_policy(text, policy_file or "<policy>", rules, _salt(salt_file))
    except PolicyError as exc:
        raise click.UsageError(f"redaction policy: {exc}") from None


def _salt(salt_file: str | None) -> bytes | None:
    if salt_file is not None:
        try:
            return Path(salt_file).read_bytes().rstrip(b"\r\n") or None
        except OSError as exc:
            raise click.BadParameter(
                f"{salt_file}: cannot read it ({type(exc).__name__})", param_hint="--redaction-salt-file"
            ) from None
    salt = os.environ.get(SALT_ENV)
    return salt.encode() if salt else None
