"""Least-privilege PostgreSQL roles for a tracker database: the privilege plan as data, its SQL, applying it.

Theory of operation. Three roles: the *owner* owns every tracker object and runs the migrations; the
*writer* (sync, ingest, projection rebuilds) appends to the ledger and maintains the disposable and
operational tables; the *reader* (BI) sees the public views and nothing else. The plan below is data:
which privileges the writer gets on each table, which views the reader sees. :func:`roles_sql` turns it
into reviewable SQL (pure; ``tracker db roles --print-sql``). :func:`apply_roles` runs, in one
transaction, the sections the connected role is entitled to, then reads the catalog back and compares
it with the plan (:func:`privilege_problems`): a privilege granted by hand, a role that can do more than
the plan says, or a table nobody classified is reported, never silently trusted.
docs/deploy-postgres.md is the operator's side of this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from tracker.errors import TrackerError
from tracker.store.bulk import driver
from tracker.store.roles_catalog import ROLE_ATTRIBUTES, Catalog, read_catalog

POSTGRESQL_ONLY = (
    "database roles are a PostgreSQL feature: a SQLite ledger is protected by its file's permissions "
    "(docs/deploy-postgres.md)"
)


class RoleSetupError(TrackerError):
    """The role setup cannot run here, PostgreSQL refused part of it, or its outcome is not the plan."""


# --- the plan -------------------------------------------------------------------------------------------

APPEND_ONLY = ("SELECT", "INSERT")
MAINTAINED = ("SELECT", "INSERT", "UPDATE", "DELETE")
READ_ONLY = ("SELECT",)

# What the writer may do to each table. The reader gets no table at all; the owner owns them all.
WRITER_TABLES: dict[str, tuple[str, ...]] = {
    "run_events": APPEND_ONLY,  # the hash-chained ledger
    "run_payloads": APPEND_ONLY,  # erasing a payload body is an owner operation (tracker audit erase)
    "run_watermarks": MAINTAINED,  # replaced per run: DELETE, then COPY
    "proj_runs": MAINTAINED,  # projections: `projections rebuild` DELETEs and refills them, never TRUNCATE
    "proj_transitions": MAINTAINED,
    "watched_threads": MAINTAINED,  # `tracker unwatch` deletes; a claim is SELECT ... FOR UPDATE
    "watched_objects": MAINTAINED,  # `tracker unwatch --response` deletes; claims as for threads
    "sync_sources": MAINTAINED,  # a sync adds the row of a list it follows the first time, then leases it
    "listed_live": MAINTAINED,  # what a list showed live: added as pages show it, deleted once it ends
    "sync_runs": ("SELECT", "INSERT", "UPDATE"),  # one row per sync, kept for auditors: never deleted
    "ledger_purges": READ_ONLY,  # a purge is an owner operation; verify and rebuild read where it cut
    "archived_runs": READ_ONLY,  # written by a purge (owner); `projections rebuild` starts from it
    "alembic_version": READ_ONLY,  # every command checks the schema revision; only the owner migrates
}
# The public views (docs/sql.md): the reader's whole world. The writer reads them too (`tracker stats`).
VIEWS = (
    "run_current",
    "run_transitions",
    "run_status_intervals",
    "run_durations",
    "error_stats",
    "object_current",
    "object_transitions",
    "object_status_intervals",
    "object_durations",
)
WRITER_SEQUENCES: dict[str, tuple[str, ...]] = {"sync_runs_id_seq": ("USAGE", "SELECT")}  # a new sync_runs id
# The guards behind the append-only triggers; a trigger belongs to its table (and so to the owner).
FUNCTIONS = ("run_events_refuse_change()", "ledger_purges_refuse_change()", "run_payloads_refuse_change()")
# Per role kind. TEMPORARY: `projections rebuild --verify` folds into temporary shadow tables.
DATABASE_PRIVILEGES = {"owner": ("CONNECT",), "writer": ("CONNECT", "TEMPORARY"), "reader": ("CONNECT",)}
SCHEMA_PRIVILEGES = {"owner": ("USAGE", "CREATE"), "writer": ("USAGE",), "reader": ("USAGE",)}

_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_role_name(name: str) -> str:
    """``name`` if it can name a tracker role, else RoleSetupError saying what a name may be."""
    if not _ROLE_NAME.fullmatch(name) or name.startswith("pg_") or name in ("public", "none"):
        raise RoleSetupError(
            f"role name {name!r}: use at most 63 lowercase letters, digits and _, not starting with a digit or pg_"
        )
    return name


@dataclass(frozen=True)
class RoleNames:
    """The three roles of a deployment."""

    owner: str = "tracker_owner"
    writer: str = "tracker_writer"
    reader: str = "tracker_reader"

    def __post_init__(self) -> None:
        for name in self.all:
            check_role_name(name)
        if len(set(self.all)) != 3:
            raise RoleSetupError("the owner, writer and reader must be three different roles")

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.owner, self.writer, self.reader)

    def by_kind(self) -> dict[str, str]:
        return {"owner": self.owner, "writer": self.writer, "reader": self.reader}


# --- the SQL (pure) -------------------------------------------------------------------------------------


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def role_statements(names: RoleNames, passwords: Mapping[str, str]) -> list[str]:
    """Create missing roles (NOLOGIN), strip extra attributes; LOGIN with a password for ``passwords``' roles.

    ``passwords`` maps a role to the text after PASSWORD: a SCRAM verifier, or a placeholder to print.
    NOSUPERUSER, NOREPLICATION and NOBYPASSRLS are said at creation only: PostgreSQL lets only a
    superuser say them in ALTER ROLE, so an existing role is checked for them instead.
    """
    statements: list[str] = []
    for role in names.all:
        statements += [
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(role)}) THEN "
            f"CREATE ROLE {_ident(role)} NOLOGIN NOSUPERUSER NOREPLICATION NOBYPASSRLS; END IF; END $$",
            f"ALTER ROLE {_ident(role)} NOCREATEDB NOCREATEROLE",
        ]
        if role in passwords:
            statements.append(f"ALTER ROLE {_ident(role)} LOGIN PASSWORD {_literal(passwords[role])}")
    return statements


def database_statements(names: RoleNames, database: str) -> list[str]:
    """CONNECT only for the three roles, TEMPORARY for the writer, CREATE in schema public for the owner."""
    everyone = ", ".join(_ident(role) for role in names.all)
    statements = [f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC, {everyone}"]
    for kind, role in names.by_kind().items():
        privileges = ", ".join(DATABASE_PRIVILEGES[kind])
        statements.append(f"GRANT {privileges} ON DATABASE {_ident(database)} TO {_ident(role)}")
    # PostgreSQL 15 no longer grants CREATE on public to PUBLIC; a database created by an older
    # version and upgraded keeps the old grant, so it is revoked all the same.
    statements += ["REVOKE CREATE ON SCHEMA public FROM PUBLIC", f"REVOKE ALL ON SCHEMA public FROM {everyone}"]
    for kind, role in names.by_kind().items():
        statements.append(f"GRANT {', '.join(SCHEMA_PRIVILEGES[kind])} ON SCHEMA public TO {_ident(role)}")
    return statements


def object_statements(names: RoleNames) -> list[str]:
    """Every tracker object to the owner; the writer's and the reader's privileges exactly as planned.

    A sequence follows the table that owns it (sync_runs.id), as do indexes and triggers.
    """
    owner, writer, reader = (_ident(role) for role in names.all)
    statements = [f"ALTER TABLE {table} OWNER TO {owner}" for table in WRITER_TABLES]
    statements += [f"ALTER VIEW {view} OWNER TO {owner}" for view in VIEWS]
    statements += [f"ALTER FUNCTION {function} OWNER TO {owner}" for function in FUNCTIONS]
    statements.append(f"REVOKE ALL ON TABLE {', '.join([*WRITER_TABLES, *VIEWS])} FROM PUBLIC, {writer}, {reader}")
    statements += [f"GRANT {', '.join(grant)} ON TABLE {table} TO {writer}" for table, grant in WRITER_TABLES.items()]
    statements.append(f"GRANT SELECT ON TABLE {', '.join(VIEWS)} TO {writer}, {reader}")
    statements.append(f"REVOKE ALL ON SEQUENCE {', '.join(WRITER_SEQUENCES)} FROM PUBLIC, {writer}, {reader}")
    statements += [
        f"GRANT {', '.join(grant)} ON SEQUENCE {sequence} TO {writer}" for sequence, grant in WRITER_SEQUENCES.items()
    ]
    return statements


def roles_sql_sections(
    names: RoleNames, *, database: str, passwords: Mapping[str, str] | None = None
) -> list[tuple[str, list[str]]]:
    """The statements of :func:`roles_sql`, titled by who may run them."""
    return [
        ("roles (a superuser, or a role with CREATEROLE)", role_statements(names, passwords or {})),
        ("database and schema (a superuser, or the database owner)", database_statements(names, database)),
        ("tracker objects, at the schema head (a superuser, or the owner)", object_statements(names)),
    ]


def roles_sql(
    owner: str, writer: str, reader: str, *, database: str, passwords: Mapping[str, str] | None = None
) -> list[str]:
    """Every statement of the plan for these roles and database, in order (pure)."""
    sections = roles_sql_sections(RoleNames(owner, writer, reader), database=database, passwords=passwords)
    return [statement for _title, statements in sections for statement in statements]


# --- passwords ------------------------------------------------------------------------------------------


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (``pg_authid.rolpassword``) was made from ``password`` (RFC 5802).

    libpq applies SASLprep to the password first; that is the identity for ASCII passwords. For any other
    this may answer False, which only costs setting the same password again.
    """
    try:
        method, parameters, keys = verifier.split("$")
        iterations, salt = parameters.split(":")
        stored_key = base64.b64decode(keys.split(":")[0])
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


# --- the check: the catalog against the plan (pure) ---------------------------------------------


def expected_privileges(kind: str, relation: str, relkind: str) -> frozenset[str]:
    """What the plan gives the ``kind`` ("writer" or "reader") on a relation of public; unlisted: nothing."""
    if relkind == "S":
        return frozenset(WRITER_SEQUENCES.get(relation, ())) if kind == "writer" else frozenset()
    if relation in VIEWS:
        return frozenset(READ_ONLY)
    return frozenset(WRITER_TABLES.get(relation, ())) if kind == "writer" else frozenset()


def _differs(role: str, actual: frozenset[str], expected: frozenset[str], where: str) -> list[str]:
    if actual == expected:
        return []
    shown = [", ".join(sorted(privileges)) or "nothing" for privileges in (actual, expected)]
    return [f"{role} has {shown[0]} on {where} (plan: {shown[1]})"]


def privilege_problems(catalog: Catalog, names: RoleNames, *, schema_present: bool) -> list[str]:
    """Every way the catalog differs from the plan, one phrase each; empty when they agree."""
    problems = [f"role {role} does not exist" for role in names.all if role not in catalog.attributes]
    for role, attributes in catalog.attributes.items():
        problems += [f"{role} has {name[3:].upper()}" for name in ROLE_ATTRIBUTES if attributes[name]]
        if catalog.members_of_owner.get(role):
            problems.append(f"{role} is a member of {names.owner}")
        if catalog.may_set_replication_role.get(role):
            problems.append(f"{role} may SET session_replication_role")
    for kind, role in names.by_kind().items():
        if role not in catalog.attributes:
            continue
        on_database, on_schema = frozenset(DATABASE_PRIVILEGES[kind]), frozenset(SCHEMA_PRIVILEGES[kind])
        if kind == "owner":  # what it needs; what more it may do in its own schema is its own business
            if not (on_database <= catalog.database[role] and on_schema <= catalog.schema[role]):
                problems.append(f"{role} lacks CONNECT on the database or USAGE, CREATE on schema public")
            continue
        problems += _differs(role, catalog.database[role], on_database, "the database")
        problems += _differs(role, catalog.schema[role], on_schema, "schema public")
        for relation, (relkind, _owner) in sorted(catalog.relations.items()):
            actual = catalog.privileges.get((role, relation), frozenset())
            problems += _differs(role, actual, expected_privileges(kind, relation, relkind), relation)
    if schema_present:
        owners = {name: owner for name, (_relkind, owner) in catalog.relations.items()} | catalog.functions
        for name in [*WRITER_TABLES, *VIEWS, *WRITER_SEQUENCES, *FUNCTIONS]:
            if name not in owners:
                problems.append(f"{name} is missing")
            elif owners[name] != names.owner:
                problems.append(f"{name} is owned by {owners[name]}, not {names.owner}")
    return problems


def unclassified(catalog: Catalog) -> list[str]:
    """Relations and functions of schema public that the plan does not name."""
    known = {*WRITER_TABLES, *VIEWS, *WRITER_SEQUENCES, *FUNCTIONS}
    return sorted(name for name in [*catalog.relations, *catalog.functions] if name not in known)


# --- applying it ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleOutcome:
    """One role after :func:`apply_roles`."""

    name: str
    created: bool
    can_login: bool
    password: str  # "set", "unchanged" (it already was that password) or "not given"


@dataclass(frozen=True)
class RolesReport:
    """What :func:`apply_roles` did; the catalog matched the plan afterwards, or it would have raised."""

    database: str
    roles: tuple[RoleOutcome, ...]
    roles_altered: bool  # False: the roles exist and this connection may not alter them (the owner's rerun)
    database_locked: bool  # False: left as it was (needs a superuser or the database owner), and checked
    revision: str | None  # the schema revision granted on; None: no tracker schema yet, nothing granted
    unclassified: tuple[str, ...]  # objects of schema public the plan does not name: nobody may use them


@dataclass(frozen=True)
class _Runner:
    """The connected role, and which sections of the plan it may run."""

    name: str
    superuser: bool
    createrole: bool
    database: str
    owns_database: bool
    member_of_owner: bool

    @property
    def manages_roles(self) -> bool:
        return self.superuser or self.createrole

    @property
    def locks_database(self) -> bool:
        return self.superuser or self.owns_database


_RUNNER_SQL = """
    SELECT current_user, r.rolsuper, r.rolcreaterole, current_database(),
           pg_has_role(current_user, d.datdba, 'MEMBER'),
           EXISTS (SELECT FROM pg_roles WHERE rolname = :owner)
             AND pg_has_role(current_user, (SELECT oid FROM pg_roles WHERE rolname = :owner), 'MEMBER')
    FROM pg_roles r JOIN pg_database d ON d.datname = current_database() WHERE r.rolname = current_user"""
PASSWORD_PLACEHOLDER = "<SCRAM-SHA-256 verifier>"


def apply_roles(engine: Engine, names: RoleNames, passwords: Mapping[str, str] | None = None) -> RolesReport:
    """Apply the plan for ``names`` on ``engine``'s database in one transaction, then check it.

    ``passwords`` maps role names to clear-text passwords: each becomes a SCRAM verifier on this side
    (libpq's PQencryptPasswordConn), so the clear text never reaches the server, its logs or catalogs.
    """
    if engine.dialect.name != "postgresql":
        raise RoleSetupError(POSTGRESQL_ONLY)
    given = {role: password for role, password in (passwords or {}).items() if password}
    if not set(given) <= set(names.all):
        raise ValueError("passwords are for the owner, writer or reader only")
    with engine.begin() as connection:
        # ALTER TABLE waits for running syncs and then blocks them: better to fail than to hang.
        connection.execute(text("SET LOCAL lock_timeout = '30s'"))
        runner = _Runner(*connection.execute(text(_RUNNER_SQL), {"owner": names.owner}).one())
        logins = _logins(connection, names)
        missing = [role for role in names.all if role not in logins]
        _refuse_unless_entitled(runner, names, missing, bool(given))
        revision = _revision_at_head(connection, names)
        verifiers = _verifiers(connection, runner, logins, given)
        if runner.manages_roles:
            placeholders = dict.fromkeys(verifiers, PASSWORD_PLACEHOLDER)
            _execute(connection, role_statements(names, verifiers), role_statements(names, placeholders))
        if revision is not None and not runner.superuser and not runner.member_of_owner:
            # A CREATEROLE role may hand its objects over only to a role it is a member of.
            _execute(connection, [f"GRANT {_ident(names.owner)} TO CURRENT_USER"])
        if runner.locks_database:
            _execute(connection, database_statements(names, runner.database))
        if revision is not None:
            _execute(connection, object_statements(names))
        catalog = read_catalog(connection, names.all, names.owner)
        problems = privilege_problems(catalog, names, schema_present=revision is not None)
        if problems:
            raise RoleSetupError(f"the roles do not match the plan: {'; '.join(problems)} (docs/deploy-postgres.md)")
        logins_after = _logins(connection, names)
    outcomes = tuple(
        RoleOutcome(
            role,
            created=role in missing,
            can_login=logins_after[role],
            password="set" if role in verifiers else "unchanged" if role in given else "not given",
        )
        for role in names.all
    )
    return RolesReport(
        runner.database, outcomes, runner.manages_roles, runner.locks_database, revision, tuple(unclassified(catalog))
    )


def _refuse_unless_entitled(runner: _Runner, names: RoleNames, missing: list[str], passwords: bool) -> None:
    """RoleSetupError unless ``runner`` may do what this run needs (before anything is changed)."""
    if not runner.manages_roles and not runner.member_of_owner:
        raise RoleSetupError(
            f"{runner.name} may neither create roles nor grant on the tracker's objects: connect as a "
            f"superuser, as a role with CREATEROLE that owns the objects, or as {names.owner}"
        )
    if not runner.manages_roles and missing:
        raise RoleSetupError(
            f"{runner.name} has no CREATEROLE and cannot create {', '.join(missing)}: connect as a superuser"
        )
    if not runner.manages_roles and passwords:
        raise RoleSetupError(f"{runner.name} has no CREATEROLE and cannot set passwords: leave them unset")


def _revision_at_head(connection: Connection, names: RoleNames) -> str | None:
    """The schema revision (None: no tracker schema yet); RoleSetupError for one that is not the head."""
    from tracker.store.migrate import head_revision  # alembic, imported only when needed

    if connection.execute(text("SELECT to_regclass('public.alembic_version')")).scalar_one() is None:
        return None
    revision: str | None = connection.execute(text("SELECT max(version_num) FROM alembic_version")).scalar_one()
    if revision not in (None, head_revision()):
        raise RoleSetupError(
            f"the database is at schema revision {revision}, this tracker's is {head_revision()}: "
            f"run `tracker db upgrade` as {names.owner} (or as its current owner) first"
        )
    return revision


def _logins(connection: Connection, names: RoleNames) -> dict[str, bool]:
    query = text("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(:roles)")
    return {name: bool(login) for name, login in connection.execute(query, {"roles": list(names.all)})}


def _verifiers(
    connection: Connection, runner: _Runner, logins: Mapping[str, bool], given: Mapping[str, str]
) -> dict[str, str]:
    """A fresh SCRAM verifier for each role not already a login role with ``given``'s password.

    Only a superuser can read the stored verifiers; for anyone else every given password is set again
    (same password, new salt).
    """
    verifiers: dict[str, str] = {}
    for role, password in given.items():
        if runner.superuser and logins.get(role):
            query = text("SELECT rolpassword FROM pg_authid WHERE rolname = :role")
            stored = connection.execute(query, {"role": role}).scalar_one()
            if stored is not None and scram_matches(stored, password):
                continue
        pgconn = driver(connection).pgconn
        verifiers[role] = pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
    return verifiers


def _execute(connection: Connection, statements: list[str], shown: list[str] | None = None) -> None:
    """Run ``statements``; a refusal names the statement as ``shown`` (passwords as placeholders)."""
    import psycopg

    with driver(connection).cursor() as cursor:
        for statement, as_shown in zip(statements, shown or statements, strict=True):
            try:
                cursor.execute(statement)
            except psycopg.Error as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise RoleSetupError(f"PostgreSQL refused `{as_shown}`: {reason}") from None
