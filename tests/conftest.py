"""Shared fixtures: one ``db_url`` / ``engine`` pair parametrized over SQLite and PostgreSQL.

Every storage test takes ``engine`` (or ``db_url``) and so runs on both databases. PostgreSQL is a
real server started once per session on 127.0.0.1 (tests/pgserver.py); each test gets a fresh
database cloned from a template that is already migrated to head. With TRACKER_REQUIRE_POSTGRES=1
(set by scripts/test, hence CI) a PostgreSQL that cannot start fails the run instead of skipping.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine

from tests.pgserver import ExternalPostgres, PostgresServer, postgres_for_tests
from tracker.signing import SigningKey, generate_key, load_signing_key
from tracker.store import open_database
from tracker.store.engine import make_engine
from tracker.store.migrate import upgrade

TEMPLATE = "tracker_template"
_counter = itertools.count()


@dataclass(frozen=True)
class TestPostgres:
    """The session's PostgreSQL server and the name of its migrated template database."""

    server: PostgresServer | ExternalPostgres
    template: str


@pytest.fixture(scope="session")
def postgres() -> Iterator[TestPostgres]:
    server = postgres_for_tests()
    try:
        server.start()
    except Exception as exc:
        if os.environ.get("TRACKER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (TRACKER_REQUIRE_POSTGRES=1) but did not start: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        name = f"{TEMPLATE}_{os.getpid()}"
        template = make_engine(server.create_database(name))
        upgrade(template)
        template.dispose()
        yield TestPostgres(server, name)
    finally:
        server.stop()


def fresh_postgres_url(postgres: TestPostgres, *, migrated: bool = True) -> str:
    """A new database on the test server (a clone of the migrated template unless ``migrated=False``)."""
    name = f"t{os.getpid()}_{next(_counter)}"
    if not migrated:
        return postgres.server.create_database(name)
    admin = postgres.server.url().replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
        connection.execute(statement.format(sql.Identifier(name), sql.Identifier(postgres.template)))
    return postgres.server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """URL of a fresh, migrated database on ``backend``."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'tracker.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url
    server = request.getfixturevalue("postgres")
    return fresh_postgres_url(server)


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """URL of a fresh database with no schema at all, on ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return fresh_postgres_url(request.getfixturevalue("postgres"), migrated=False)


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    """A fresh Ed25519 signing key at ``tmp_path / "audit.key"`` (its public half beside it, ``.pub``)."""
    generate_key(tmp_path / "audit.key")
    return load_signing_key(tmp_path / "audit.key")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    yield engine
    engine.dispose()
