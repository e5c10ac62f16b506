"""``tracker db roles``: a hardened PostgreSQL deployment, set up in the documented order and then attacked.

The module's ``deployment`` follows docs/deploy-postgres.md on a fresh database: the superuser runs
``tracker db roles`` (passwords from the environment), the owner runs ``tracker db upgrade`` and then
``tracker db roles`` again, the writer ingests a file. Every refusal is then proved with the exact
PostgreSQL error class, as the writer and as the reader, and the log is checked to be what it was.
The test server trusts every local connection, so a role's password is proved by its stored SCRAM
verifier rather than by logging in with it.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import errors
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tests import conftest
from tests.conftest import fresh_postgres_url
from tracker.cli import cli
from tracker.cli.db_roles_command import PASSWORD_ENV
from tracker.signing import generate_key
from tracker.simulator import ManualClock, SimulatorServer, World
from tracker.sources.openai_runs import Caller, RateLimiter, RunsApi
from tracker.store import watchlist
from tracker.store.audit import verify_chain
from tracker.store.engine import make_engine
from tracker.store.roles import (
    FUNCTIONS,
    VIEWS,
    WRITER_SEQUENCES,
    WRITER_TABLES,
    RoleNames,
    RoleSetupError,
    apply_roles,
    object_statements,
    scram_matches,
    unclassified,
)
from tracker.store.roles_catalog import read_catalog
from tracker.sync import SyncOptions, sync
from tracker.synthetic import snapshot_stream

START = 1_800_000_000.0
DOC = Path(__file__).resolve().parent.parent / "docs" / "deploy-postgres.md"
_names = itertools.count()


def _fresh_names() -> RoleNames:
    """Role names no other test uses (roles belong to the whole server, not to one database)."""
    suffix = f"{os.getpid()}_{next(_names)}"
    return RoleNames(f"own_{suffix}", f"wri_{suffix}", f"rea_{suffix}")


def as_role(url: str, role: str, password: str = "") -> str:
    """``url`` (the superuser's) connecting as ``role`` instead."""
    parsed = make_url(url).set(username=role, password=password or None)
    return parsed.render_as_string(hide_password=False)


def tracker(url: str, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """``tracker --database-url url *args`` with no TRACKER_*_PASSWORD set unless ``env`` sets it."""
    environment: dict[str, str | None] = dict.fromkeys(PASSWORD_ENV.values())
    environment.update(env or {})
    return CliRunner().invoke(cli, ["--database-url", url, *args], env=environment, catch_exceptions=False)


def _role_args(names: RoleNames) -> list[str]:
    return ["--owner", names.owner, "--writer", names.writer, "--reader", names.reader]


@dataclass
class Deployment:
    """A database set up as docs/deploy-postgres.md says, and everything its commands printed."""

    superuser: str
    names: RoleNames
    passwords: dict[str, str]  # kind -> password
    outputs: list[str] = field(default_factory=list)

    def url(self, kind: str) -> str:
        role = self.names.by_kind()[kind]
        return as_role(self.superuser, role, self.passwords[kind])

    def env(self) -> dict[str, str | None]:
        return {PASSWORD_ENV[kind]: password for kind, password in self.passwords.items()}

    def run(self, url: str, *args: str, env: dict[str, str | None] | None = None) -> Result:
        result = tracker(url, *args, env=env)
        self.outputs.append(result.output)
        return result


@pytest.fixture(scope="module")
def deployment(postgres: conftest.TestPostgres, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return _deploy(postgres, tmp_path_factory)


def _deploy(postgres: conftest.TestPostgres, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """A database set up in the documented order, with a few runs ingested by the writer."""
    names = _fresh_names()
    passwords = {kind: f"{kind}-{secrets.token_urlsafe(12)}" for kind in ("owner", "writer", "reader")}
    setup = Deployment(fresh_postgres_url(postgres, migrated=False), names, passwords)
    # Every statement sent to this database is logged: a password sent in clear would be in the log.
    with psycopg.connect(_libpq(setup.superuser), autocommit=True) as connection:
        connection.execute(f"ALTER DATABASE {make_url(setup.superuser).database} SET log_statement = 'all'")
    first = setup.run(setup.superuser, "db", "roles", *_role_args(names), env=setup.env())
    assert first.exit_code == 0, first.output
    assert "tracker objects: none yet" in first.stdout
    upgrade = setup.run(setup.url("owner"), "db", "upgrade")
    assert upgrade.exit_code == 0, upgrade.output
    grants = setup.run(setup.url("owner"), "db", "roles", *_role_args(names))
    assert grants.exit_code == 0, grants.output
    assert "granted as planned" in grants.stdout
    snapshots = tmp_path_factory.mktemp("roles") / "snapshots.jsonl"
    snapshots.write_text("".join(json.dumps(record) + "\n" for record in snapshot_stream(6, seed=4)))
    ingest = setup.run(setup.url("writer"), "ingest", str(snapshots))
    assert ingest.exit_code == 0, ingest.output
    return setup


@pytest.fixture
def writer(deployment: Deployment) -> Iterator[Engine]:
    engine = make_engine(deployment.url("writer"))
    yield engine
    engine.dispose()


@pytest.fixture
def reader(deployment: Deployment) -> Iterator[Engine]:
    engine = make_engine(deployment.url("reader"))
    yield engine
    engine.dispose()


def _events(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text("SELECT seq, hash FROM run_events ORDER BY seq"))]


def _refused(engine: Engine, statement: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as caught, engine.begin() as connection:
        connection.execute(text(statement))
    return caught.value


# --- the writer: a working ledger ----------------------------------------------------------------------


def test_the_writer_ingests_rebuilds_and_verifies(deployment: Deployment, writer: Engine) -> None:
    url = deployment.url("writer")
    assert len(_events(writer)) > 10
    for args, says in (
        (("projections", "rebuild"), "rebuilt projections from"),
        (("projections", "rebuild", "--verify"), "projections match a rebuild"),
        (("audit", "verify"), "chain intact"),
    ):
        result = deployment.run(url, *args)
        assert result.exit_code == 0, result.output
        assert says in result.stdout


@pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")
def test_the_writer_watches_and_syncs(deployment: Deployment, writer: Engine) -> None:
    clock = ManualClock(START)
    world = World(seed=3, clock=clock)
    with SimulatorServer(world) as server:
        threads = world.populate(3, 2)
        watchlist.watch(writer, threads, START)
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        try:
            caller = Caller(RateLimiter(None), max_wait=1.0, sleep=lambda seconds: None)
            summary = sync(writer, RunsApi(client), caller, SyncOptions())
        finally:
            client.close()
    assert summary.outcome == "ok"
    assert summary.events_appended > 0
    assert watchlist.unwatch(writer, threads) == 3
    assert verify_chain(writer).ok


# --- the writer: every way around the append-only rule is refused ----------------------------------------

WRITER_REFUSALS = {
    "update an event": ("UPDATE run_events SET event_type = 'x' WHERE seq = 3", "permission denied for table"),
    "delete an event": ("DELETE FROM run_events WHERE seq = 3", "permission denied for table"),
    "truncate the log": ("TRUNCATE run_events", "permission denied for table"),
    "disable the guards": ("ALTER TABLE run_events DISABLE TRIGGER ALL", "must be owner of table"),
    "drop a guard": ("DROP TRIGGER trg_run_events_no_update_delete ON run_events", "must be owner of relation"),
    "replica mode": ("SET session_replication_role = replica", "permission denied to set parameter"),
    "create a table": ("CREATE TABLE public.mine (i int)", "permission denied for schema public"),
    "delete a payload": ("DELETE FROM run_payloads", "permission denied for table"),
    "erase a payload": ("UPDATE run_payloads SET body = 'null'", "permission denied for table"),
    "record a purge": (
        "INSERT INTO ledger_purges (through_seq, through_hash, purged_at, events_purged, record) "
        "VALUES (99, 'x', 0, 0, '{}')",
        "permission denied for table",
    ),
    "delete a sync record": ("DELETE FROM sync_runs", "permission denied for table"),
    "take the table": ("ALTER TABLE run_events OWNER TO CURRENT_USER", "must be owner of table"),
}


@pytest.mark.parametrize(("statement", "message"), WRITER_REFUSALS.values(), ids=WRITER_REFUSALS.keys())
def test_the_writer_is_refused(writer: Engine, statement: str, message: str) -> None:
    before = _events(writer)
    refusal = _refused(writer, statement)
    assert isinstance(refusal.orig, errors.InsufficientPrivilege)
    assert refusal.orig.sqlstate == "42501"
    assert message in str(refusal.orig)
    assert _events(writer) == before
    assert verify_chain(writer).ok


# --- the reader: the views and nothing else --------------------------------------------------------------


@pytest.mark.parametrize("view", VIEWS)
def test_the_reader_selects_each_view(reader: Engine, view: str) -> None:
    with reader.connect() as connection:
        rows = connection.execute(text(f"SELECT * FROM {view}")).all()
    assert rows


READER_REFUSALS = {
    "read the log": "SELECT * FROM run_events",
    "read a projection": "SELECT * FROM proj_runs",
    "read payloads": "SELECT * FROM run_payloads",
    "insert through a view": "INSERT INTO run_transitions (seq, run_id) VALUES (-1, 'x')",
    "insert an event": "INSERT INTO run_events (seq) VALUES (-1)",
    "delete through a view": "DELETE FROM run_current",
    "create a table": "CREATE TABLE public.mine (i int)",
    "create a temporary table": "CREATE TEMPORARY TABLE mine (i int)",
}


@pytest.mark.parametrize("statement", READER_REFUSALS.values(), ids=READER_REFUSALS.keys())
def test_the_reader_is_refused(reader: Engine, statement: str) -> None:
    refusal = _refused(reader, statement)
    assert isinstance(refusal.orig, errors.InsufficientPrivilege)
    assert refusal.orig.sqlstate == "42501"


# --- the limits the doc admits ---------------------------------------------------------------------------


def test_only_the_owner_may_erase_and_purge(
    postgres: conftest.TestPostgres, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The two audited changes to stored data are the owner's: the writer is refused before anything
    is written (no archive file left behind), the owner succeeds and the writer still verifies."""
    setup = _deploy(postgres, tmp_path_factory)
    generate_key(tmp_path / "audit.key")
    key = ["--key", str(tmp_path / "audit.key")]
    writer_url, owner_url = setup.url("writer"), setup.url("owner")
    engine = make_engine(writer_url)
    with engine.connect() as connection:
        run_id = connection.execute(text("SELECT min(run_id) FROM run_payloads")).scalar_one()
    engine.dispose()
    purge = ["audit", "purge", "--before", f"{time.time():.3f}", "--min-age-days", "0", *key]
    erase = ["audit", "erase", "--run", run_id, "--reason", "DSR-1", *key]

    refused = setup.run(writer_url, *purge, "--archive", str(tmp_path / "w.jsonl"))
    assert refused.exit_code == 1
    assert "may not purge" in refused.output and "INSERT on ledger_purges" in refused.output
    assert not (tmp_path / "w.jsonl").exists()
    refused = setup.run(writer_url, *erase)
    assert refused.exit_code == 1
    assert "may not erase payloads (it lacks UPDATE on run_payloads)" in refused.output

    erased = setup.run(owner_url, *erase, "--json")
    assert erased.exit_code == 0, erased.output
    assert json.loads(erased.stdout)["compacted"] is True
    purged = setup.run(owner_url, *purge, "--archive", str(tmp_path / "o.jsonl"))
    assert purged.exit_code == 0, purged.output
    verified = setup.run(writer_url, "audit", "verify", "--public-key", str(tmp_path / "audit.key.pub"))
    assert verified.exit_code == 0, verified.output
    assert "purged: seq 1.." in verified.stdout


def test_the_owner_can_still_disable_the_guards(deployment: Deployment) -> None:
    # docs/deploy-postgres.md: the owner (and any superuser) is trusted; the hash chain catches its edits.
    with psycopg.connect(_libpq(deployment.url("owner"))) as connection:
        connection.execute("ALTER TABLE run_events DISABLE TRIGGER ALL")
        connection.rollback()


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- running it again --------------------------------------------------------------------------------------

_SNAPSHOT_SQL = [
    """SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,
              rolbypassrls, rolpassword, rolconnlimit, rolvaliduntil
       FROM pg_authid WHERE rolname = ANY(%(roles)s) ORDER BY rolname""",
    """SELECT roleid::regrole::text, member::regrole::text, admin_option FROM pg_auth_members
       WHERE roleid::regrole::text = ANY(%(roles)s) OR member::regrole::text = ANY(%(roles)s) ORDER BY 1, 2""",
    """SELECT relname, relowner::regrole::text, relacl::text FROM pg_class
       WHERE relnamespace = 'public'::regnamespace ORDER BY relname""",
    "SELECT proname, proowner::regrole::text, proacl::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
    "SELECT nspowner::regrole::text, nspacl::text FROM pg_namespace WHERE nspname = 'public'",
    "SELECT datdba::regrole::text, datacl::text FROM pg_database WHERE datname = current_database()",
]


def _catalog_snapshot(deployment: Deployment) -> list[list[tuple[Any, ...]]]:
    with psycopg.connect(_libpq(deployment.superuser)) as connection:
        roles = {"roles": list(deployment.names.all)}
        return [connection.execute(query, roles).fetchall() for query in _SNAPSHOT_SQL]


def test_running_it_again_changes_nothing(deployment: Deployment) -> None:
    before = _catalog_snapshot(deployment)
    again = deployment.run(deployment.superuser, "db", "roles", *_role_args(deployment.names), env=deployment.env())
    assert again.exit_code == 0, again.output
    assert again.stdout.count("already set") == 3
    assert _catalog_snapshot(deployment) == before
    owner = deployment.run(deployment.url("owner"), "db", "roles", *_role_args(deployment.names))
    assert owner.exit_code == 0, owner.output
    assert _catalog_snapshot(deployment) == before


# --- passwords ---------------------------------------------------------------------------------------------


def test_passwords_are_stored_as_scram_verifiers_only(deployment: Deployment) -> None:
    with psycopg.connect(_libpq(deployment.superuser)) as connection:
        for kind, role in deployment.names.by_kind().items():
            row = connection.execute(
                "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s", [role]
            ).fetchone()
            assert row is not None and row[0] is True
            assert row[1].startswith("SCRAM-SHA-256$")
            assert scram_matches(row[1], deployment.passwords[kind])
            assert not scram_matches(row[1], deployment.passwords[kind] + "x")


def test_passwords_reach_no_output_and_no_error(deployment: Deployment) -> None:
    names, env = deployment.names, deployment.env()
    shown = deployment.run(deployment.superuser, "db", "roles", *_role_args(names), "--print-sql", env=env)
    assert shown.exit_code == 0
    assert f"<SCRAM-SHA-256 verifier of ${PASSWORD_ENV['writer']}>" in shown.stdout
    refused = deployment.run(deployment.url("writer"), "db", "roles", *_role_args(names), env=env)
    assert refused.exit_code == 1
    assert "may neither create roles nor grant" in refused.stderr
    environment = {**dict.fromkeys(PASSWORD_ENV.values()), **env}
    debug = CliRunner().invoke(
        cli, ["--database-url", deployment.url("owner"), "--debug", "db", "roles", *_role_args(names)], env=environment
    )
    assert isinstance(debug.exception, RoleSetupError)
    deployment.outputs.append("".join(traceback.format_exception(debug.exception)))
    assert "cannot set passwords" in deployment.outputs[-1]
    everything = "\n".join(deployment.outputs)
    for password in deployment.passwords.values():
        assert password not in everything


def test_passwords_reach_no_server_log(postgres: conftest.TestPostgres, deployment: Deployment) -> None:
    log = getattr(postgres.server, "_log", None)  # the private server's log file (tests/pgserver.py)
    if not isinstance(log, Path):
        pytest.skip("the server's log is not readable from here (TRACKER_TEST_PG_URL)")
    text_of_log = log.read_text(errors="replace")
    assert "PASSWORD 'SCRAM-SHA-256$" in text_of_log  # the statements that set them were logged
    for password in deployment.passwords.values():
        assert password not in text_of_log


def test_a_role_given_no_password_is_created_nologin(postgres: conftest.TestPostgres) -> None:
    url = fresh_postgres_url(postgres, migrated=False)
    names = _fresh_names()
    result = tracker(url, "db", "roles", *_role_args(names), env={PASSWORD_ENV["owner"]: "owner-secret"})
    assert result.exit_code == 0, result.output
    assert f"role {names.writer}: created, NOLOGIN (set {PASSWORD_ENV['writer']} to let it log in)" in result.stdout
    with psycopg.connect(_libpq(url)) as connection:
        logins: dict[str, bool] = dict(
            connection.execute(
                "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)", [list(names.all)]
            ).fetchall()
        )
    assert logins == {names.owner: True, names.writer: False, names.reader: False}


# --- who may run it ----------------------------------------------------------------------------------------


def test_a_role_without_createrole_that_owns_nothing_gets_a_clear_error(deployment: Deployment) -> None:
    result = tracker(deployment.url("reader"), "db", "roles", *_role_args(deployment.names))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"tracker: error: {deployment.names.reader} may neither create roles nor grant on the tracker's objects: "
        f"connect as a superuser, as a role with CREATEROLE that owns the objects, or as {deployment.names.owner}"
    ]


def test_a_createrole_role_that_owns_the_objects_may_run_it(postgres: conftest.TestPostgres) -> None:
    url = fresh_postgres_url(postgres)  # migrated by the superuser, as an existing deployment would be
    names = _fresh_names()
    admin = f"adm_{names.owner}"
    with psycopg.connect(_libpq(url), autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {admin} LOGIN CREATEROLE")
        connection.execute(f"ALTER DATABASE {make_url(url).database} OWNER TO {admin}")
        for statement in object_statements(RoleNames(admin, names.writer, names.reader)):
            if " OWNER TO " in statement:
                connection.execute(statement)
    engine = make_engine(as_role(url, admin))
    try:
        report = apply_roles(engine, names, {names.writer: "writer-secret"})
    finally:
        engine.dispose()
    assert report.roles_altered and report.database_locked and report.revision is not None
    assert [role.created for role in report.roles] == [True, True, True]


def test_a_sqlite_database_gets_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    for extra in ((), ("--print-sql",)):
        result = tracker(url, "db", "roles", *extra)
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            "tracker: error: database roles are a PostgreSQL feature: a SQLite ledger is protected by its "
            "file's permissions (docs/deploy-postgres.md)"
        ]
    engine = make_engine(url)
    try:
        with pytest.raises(RoleSetupError, match="PostgreSQL feature"):
            apply_roles(engine, RoleNames())
    finally:
        engine.dispose()
    assert not (tmp_path / "tracker.db").exists()


def test_a_bad_role_name_is_a_usage_error() -> None:
    result = tracker("postgresql://x@127.0.0.1/db", "db", "roles", "--writer", "Robert'); DROP")
    assert result.exit_code == 2
    assert "lowercase letters" in result.output


# --- the plan keeps up with the schema ---------------------------------------------------------------------


def test_every_table_view_sequence_and_function_of_the_schema_is_in_the_plan(postgres: conftest.TestPostgres) -> None:
    # A migration that adds an object fails here until tracker/store/roles.py says who may use it.
    engine = make_engine(fresh_postgres_url(postgres))
    try:
        with engine.connect() as connection:
            catalog = read_catalog(connection, [], "postgres")
    finally:
        engine.dispose()
    assert unclassified(catalog) == []
    assert set(catalog.relations) == {*WRITER_TABLES, *VIEWS, *WRITER_SEQUENCES}
    assert set(catalog.functions) == set(FUNCTIONS)
    assert {name for name, (kind, _owner) in catalog.relations.items() if kind == "v"} == set(VIEWS)


# --- what a hand-made grant looks like ---------------------------------------------------------------------

HAND_GRANTS = {
    "membership of the owner": ("GRANT {owner} TO {writer}", "REVOKE {owner} FROM {writer}", "is a member of"),
    "replica mode": (
        "GRANT SET ON PARAMETER session_replication_role TO {writer}",
        "REVOKE SET ON PARAMETER session_replication_role FROM {writer}",
        "may SET session_replication_role",
    ),
    "create in the database": (
        "GRANT CREATE ON DATABASE {database} TO PUBLIC",
        "REVOKE CREATE ON DATABASE {database} FROM PUBLIC",
        "CONNECT, CREATE, TEMPORARY on the database",
    ),
}


@pytest.mark.parametrize(("grant", "revoke", "reported"), HAND_GRANTS.values(), ids=HAND_GRANTS.keys())
def test_a_grant_beyond_the_plan_is_reported_and_nothing_changes(
    deployment: Deployment, grant: str, revoke: str, reported: str
) -> None:
    names = {**deployment.names.by_kind(), "database": make_url(deployment.superuser).database}
    before = _catalog_snapshot(deployment)
    with psycopg.connect(_libpq(deployment.superuser), autocommit=True) as connection:
        connection.execute(grant.format(**names))
        try:
            result = tracker(deployment.url("owner"), "db", "roles", *_role_args(deployment.names))
        finally:
            connection.execute(revoke.format(**names))
    assert result.exit_code == 1
    assert "the roles do not match the plan" in result.stderr and reported in result.stderr
    assert _catalog_snapshot(deployment) == before


def test_a_table_outside_the_plan_gets_nothing_and_is_named(deployment: Deployment, writer: Engine) -> None:
    with psycopg.connect(_libpq(deployment.superuser), autocommit=True) as connection:
        connection.execute(
            f"CREATE TABLE public.extra (i int); ALTER TABLE public.extra OWNER TO {deployment.names.owner}"
        )
        try:
            result = tracker(deployment.url("owner"), "db", "roles", *_role_args(deployment.names))
            refusal = _refused(writer, "SELECT * FROM extra")
        finally:
            connection.execute("DROP TABLE public.extra")
    assert result.exit_code == 0, result.output
    assert f"warning: extra is not in the privilege plan: {deployment.names.writer}" in result.stdout
    assert isinstance(refusal.orig, errors.InsufficientPrivilege)


# --- the doc shows the SQL it runs -------------------------------------------------------------------------


def test_the_sql_in_the_doc_is_what_print_sql_prints() -> None:
    env: dict[str, str | None] = dict.fromkeys(PASSWORD_ENV.values(), "never-printed")
    result = tracker("postgresql://postgres@db.example/tracker", "db", "roles", "--print-sql", env=env)
    assert result.exit_code == 0, result.output
    assert "never-printed" not in result.output
    doc = DOC.read_text(encoding="utf-8")
    block = doc.split("<!-- print-sql -->\n```sql\n", 1)[1].split("```", 1)[0]
    assert block == result.stdout, "docs/deploy-postgres.md: paste the output of `tracker db roles --print-sql`"
