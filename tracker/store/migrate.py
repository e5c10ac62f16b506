"""Schema versions: find the migrations (source tree or installed wheel), upgrade, and refuse to run
on a database whose schema is not the one this code expects.

A brand-new empty database is migrated on first use. An existing database at another revision is
never migrated silently: the user is told the exact command (the mlflow habit).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from tracker.errors import SchemaError


def migrations_dir() -> Path:
    """``tracker/_migrations`` in an installed wheel, else the repository's ``migrations/``."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    source = package.parent / "migrations"
    if (source / "env.py").is_file():
        return source
    raise SchemaError(f"migrations not found in {packaged} or {source}: the installation is incomplete")


def alembic_config(engine: Engine | None = None) -> Config:
    """An alembic configuration (bound to ``engine`` when given); no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise SchemaError("no migrations found")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def ensure_schema(engine: Engine, database: str) -> None:
    """Migrate an empty database; refuse one at any revision other than head.

    A refused engine is disposed: it will not be used, and its pooled connection would otherwise stay
    open until garbage collection.
    """
    try:
        _ensure_schema(engine, database)
    except SchemaError:
        engine.dispose()
        raise


def _ensure_schema(engine: Engine, database: str) -> None:
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        tables = inspect(engine).get_table_names()
        if tables:
            raise SchemaError(
                f"{database} holds tables ({', '.join(sorted(tables)[:5])}) but no tracker schema version: "
                "not a tracker database"
            )
        upgrade(engine)
        return
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
        raise SchemaError(
            f"{database} is at schema revision {current}, which this tracker does not know "
            f"(its newest is {head}): upgrade tracker itself"
        )
    raise SchemaError(
        f"{database} is at schema revision {current}, this tracker needs {head}: "
        "run `tracker db upgrade` (back up the database first)"
    )
