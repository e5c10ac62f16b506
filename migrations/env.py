"""alembic environment: online migrations only, batch mode so SQLite can follow every change.

The tracker passes its engine in ``config.attributes["engine"]``; alembic's own command line falls
back to TRACKER_DATABASE_URL (default ``sqlite:///tracker.db``).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Engine

from tracker.store.engine import make_engine
from tracker.store.schema import metadata

config = context.config


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if isinstance(engine, Engine):
        return engine
    return make_engine(os.environ.get("TRACKER_DATABASE_URL", "sqlite:///tracker.db"))


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect().execution_options(tracker_write=True) as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("tracker migrations run online only: `tracker db upgrade`")
run_migrations_online()
