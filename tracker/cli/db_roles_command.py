"""``tracker db roles``: the owner, writer and reader roles of a hardened PostgreSQL deployment.

Thin: the plan, its SQL and the check live in :mod:`tracker.store.roles`; this module reads the
passwords from the environment (never from the command line, which other users can read) and says
what happened. docs/deploy-postgres.md says who runs it when.
"""

from __future__ import annotations

import os

import click

from tracker.cli.base import Context
from tracker.cli.ledger_commands import db
from tracker.store.engine import make_engine, normalise_url, safe_url
from tracker.store.roles import (
    POSTGRESQL_ONLY,
    RoleNames,
    RoleOutcome,
    RoleSetupError,
    RolesReport,
    apply_roles,
    check_role_name,
    roles_sql_sections,
)

PASSWORD_ENV = {
    "owner": "TRACKER_OWNER_PASSWORD",
    "writer": "TRACKER_WRITER_PASSWORD",
    "reader": "TRACKER_READER_PASSWORD",
}


def _role_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_role_name(value)
    except RoleSetupError as exc:
        raise click.BadParameter(str(exc)) from None


@db.command("roles")
@click.option(
    "--owner",
    default="tracker_owner",
    show_default=True,
    callback=_role_name,
    help="The role that owns the schema and runs `tracker db upgrade`.",
)
@click.option(
    "--writer",
    default="tracker_writer",
    show_default=True,
    callback=_role_name,
    help="The role that runs sync, ingest and projections rebuild.",
)
@click.option(
    "--reader", default="tracker_reader", show_default=True, callback=_role_name, help="The role that reads the views."
)
@click.option("--print-sql", is_flag=True, help="Print the SQL (passwords as placeholders); change nothing.")
@click.pass_obj
def db_roles(obj: Context, owner: str, writer: str, reader: str, print_sql: bool) -> None:
    """Create or update the owner, writer and reader roles of a PostgreSQL ledger (docs/deploy-postgres.md).

    Passwords come from TRACKER_OWNER_PASSWORD, TRACKER_WRITER_PASSWORD and TRACKER_READER_PASSWORD; a
    role created without one is NOLOGIN. Run it as a superuser once before `tracker db upgrade`, then
    as the owner (or the superuser) after every upgrade. Running it twice changes nothing.
    """
    try:
        names = RoleNames(owner, writer, reader)
    except RoleSetupError as exc:
        raise click.UsageError(str(exc)) from None
    url = normalise_url(obj.database_url)
    if url.get_backend_name() != "postgresql":
        raise RoleSetupError(POSTGRESQL_ONLY)
    kinds = names.by_kind()
    passwords = {kinds[kind]: os.environ.get(variable, "") for kind, variable in PASSWORD_ENV.items()}
    if print_sql:
        placeholders = {
            kinds[kind]: f"<SCRAM-SHA-256 verifier of ${variable}>"
            for kind, variable in PASSWORD_ENV.items()
            if passwords[kinds[kind]]
        }
        database = url.database or url.username or "postgres"  # libpq's default database is the user's name
        _print_sql(names, database, placeholders)
        return
    engine = make_engine(url)
    try:
        report = apply_roles(engine, names, passwords)
    finally:
        engine.dispose()
    click.echo(safe_url(url))
    _print_report(report, names)


def _print_sql(names: RoleNames, database: str, placeholders: dict[str, str]) -> None:
    click.echo(f"-- tracker db roles: database {database}; a role without a password stays NOLOGIN")
    for title, statements in roles_sql_sections(names, database=database, passwords=placeholders):
        click.echo(f"\n-- {title}")
        for statement in statements:
            click.echo(f"{statement};")


def _print_report(report: RolesReport, names: RoleNames) -> None:
    kinds = {role: kind for kind, role in names.by_kind().items()}
    for role in report.roles:
        click.echo(f"role {role.name}: {_describe(role, PASSWORD_ENV[kinds[role.name]])}")
    if report.database_locked:
        click.echo(
            f"database {report.database}, schema public: CONNECT for the three roles only, TEMPORARY for "
            f"{names.writer}, CREATE for {names.owner} only"
        )
    else:
        click.echo(f"database {report.database}, schema public: left as they were (a superuser's to change)")
    if report.revision is None:
        click.echo(
            f"tracker objects: none yet; as {names.owner} run `tracker db upgrade`, then `tracker db roles` again"
        )
    else:
        click.echo(f"tracker objects (revision {report.revision}): owned by {names.owner}, granted as planned")
    for name in report.unclassified:
        click.echo(f"warning: {name} is not in the privilege plan: {names.writer} and {names.reader} get nothing on it")
    click.echo("checked: every privilege matches the plan")


def _describe(role: RoleOutcome, variable: str) -> str:
    created = "created" if role.created else "exists"
    if role.password == "set":
        return f"{created}, LOGIN, password set from {variable}"
    if role.password == "unchanged":
        return f"{created}, LOGIN, password from {variable} already set"
    if role.can_login:
        return f"{created}, LOGIN, password left as it was ({variable} not set)"
    return f"{created}, NOLOGIN (set {variable} to let it log in)"
