"""Database work on a second thread, in order, while the main thread computes.

The database does most of a statement without holding Python's GIL (sqlite3 releases it while SQLite
works; psycopg while it waits for the server), so a thread that runs the statements overlaps with the
Python work that decides the next rows: ingest and rebuild use both cores. Only the worker thread
touches the connection between ``__enter__`` and ``__exit__``; ``__exit__`` waits for all the work and
re-raises the first failure, so the caller's transaction commits only if every statement succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection

T = TypeVar("T")


class ConnectionWorker:
    """Runs ``fn(connection, *args)`` calls in submission order on one background thread."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        # An in-memory SQLite database lives in one connection that only its own thread may use:
        # there the calls run at once, in the caller's thread.
        url = connection.engine.url
        threaded = url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracker-db") if threaded else None
        self._pending: list[Future[Any]] = []

    def call(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(connection, *args)``; the caller takes its result (or exception) from the future."""
        if self._pool is not None:
            return self._pool.submit(fn, self._connection, *args)
        done: Future[T] = Future()
        try:
            done.set_result(fn(self._connection, *args))
        except Exception as exc:  # handed to whoever asks the future, as a thread would
            done.set_exception(exc)
        return done

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(connection, *args)``; a failure surfaces here on a later call, or at ``__exit__``."""
        self._pending.append(self.call(fn, *args))
        if len(self._pending) > 16:
            still = []
            for future in self._pending:
                if future.done():
                    future.result()
                else:
                    still.append(future)
            self._pending = still

    def __enter__(self) -> ConnectionWorker:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
        if exc_type is None:
            for future in self._pending:
                future.result()
