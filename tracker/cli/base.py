"""The root ``tracker`` command group, its global options and how errors reach the user.

Errors from the library (:class:`tracker.errors.TrackerError`) become one line on stderr and exit
status 1; bad invocations exit 2 (click's usage errors). ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tracker.errors import TrackerError
from tracker.store import open_database
from tracker.store.engine import safe_url

DEFAULT_DATABASE_URL = "sqlite:///tracker.db"
F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """What every command gets: the database URL, opened lazily."""

    def __init__(self, database_url: str, debug: bool) -> None:
        self.database_url = database_url
        self.debug = debug
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_database(self.database_url)
        return self._engine

    def close(self) -> None:
        """Release the engine's pooled connections (called when the command finishes)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def format_option(function: F) -> F:
    """``--format table|json`` (tables for people, JSON for scripts)."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="Output format.",
    )(function)


def time_value(value: str | None, option: str) -> float | None:
    """An option's time: ISO-8601 (UTC unless a zone is given) or epoch seconds; a usage error otherwise."""
    from tracker.snapshots import SnapshotError, parse_observed_at

    if value is None:
        return None
    try:
        return parse_observed_at(float(value) if value.replace(".", "", 1).isdigit() else value, option)
    except SnapshotError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


class TrackerGroup(click.Group):
    """Turns library and database errors into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TrackerError as exc:
            if _debug(ctx):
                raise
            click.echo(f"tracker: error: {exc}", err=True)
            sys.exit(1)
        except SQLAlchemyError as exc:
            if _debug(ctx):
                raise
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            click.echo(f"tracker: database error ({_shown_url(ctx)}): {reason}", err=True)
            sys.exit(1)


def _shown_url(ctx: click.Context) -> str:
    """The database URL with its password masked, or a placeholder if it cannot even be parsed."""
    try:
        return safe_url(ctx.params.get("database_url") or DEFAULT_DATABASE_URL)
    except TrackerError:
        return "unparsable database URL"


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug"))


@click.group(cls=TrackerGroup)
@click.option(
    "--database-url",
    envvar="TRACKER_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="SQLAlchemy URL of the ledger: sqlite:///PATH or postgresql://USER@HOST/DB (env TRACKER_DATABASE_URL).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="tracker")
@click.pass_context
def cli(ctx: click.Context, database_url: str, debug: bool) -> None:
    """Event-sourced tracker and audit log of OpenAI run objects."""
    ctx.obj = Context(database_url, debug)
    ctx.call_on_close(ctx.obj.close)
