"""The OpenAI API through the official ``openai`` SDK: list pages and single objects, as raw bytes.

Assistants runs and steps (by thread), batches and fine-tuning jobs (listed per project), background
responses (by id).

Responses are read raw (``with_raw_response``) and parsed by :mod:`tracker.snapshots`, so every field
the server sent is kept exactly as sent, unknown ones included, and ``observed_at`` is the moment the
response arrived. The SDK's own retries are off: :class:`Caller` retries itself, so that it can count
retries, share a request-rate cap between threads, and give up on a ``Retry-After`` longer than a sync
should wait (the SDK sleeps up to 60 s per retry and then raises).

Configuration is the SDK's own: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``,
``OPENAI_PROJECT_ID``. The key never leaves the client: error texts pass through :func:`redact`.
"""

from __future__ import annotations

import random
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import openai

T = TypeVar("T")

# The SDK marks every Assistants method deprecated (the API was shut down on api.openai.com on
# 2026-08-26); compatible servers still serve it, and polling it is this module's purpose.
_DEPRECATION = "The Assistants API is deprecated"


@contextmanager
def assistants_api_allowed() -> Iterator[None]:
    """Silence only the SDK's Assistants deprecation warning, for the calling thread and its workers.

    ``warnings.catch_warnings`` changes process-wide filters: enter it once, in the thread that starts
    the workers, around the whole sync.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
        yield


@dataclass(frozen=True)
class Fetched:
    """A response body as received, and when it arrived (epoch seconds)."""

    body: bytes
    arrived_at: float


class ApiFailure(Exception):
    """A request that failed; ``kind`` says how, ``retry_after`` what the server asked for (seconds)."""

    def __init__(self, kind: str, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # not_found, rate_limited, server, connection, timeout, client, malformed
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in ("rate_limited", "server", "connection", "timeout", "malformed")


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every non-trivial secret replaced, for anything that is logged or stored."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def retry_after_seconds(headers: Any) -> float | None:
    """The server's ``retry-after-ms`` or ``Retry-After`` (seconds), when present and numeric."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue  # an HTTP date: treated as absent (the backoff applies)
        if seconds >= 0:
            return seconds
    return None


class RunsApi:
    """Raw run pages and runs from one server."""

    def __init__(self, client: openai.OpenAI, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._clock = clock

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    @property
    def api_key(self) -> str:
        return str(self._client.api_key)

    @property
    def project(self) -> str | None:
        """The project the client names (``OPENAI_PROJECT_ID``), whose batches and jobs the lists hold."""
        project = self._client.project
        return str(project) if project else None

    def now(self) -> float:
        """The clock that dates responses (observation times)."""
        return self._clock()

    def list_runs(self, thread_id: str, after: str | None, limit: int) -> Fetched:
        """One page of a thread's runs, newest first, after the run id ``after``."""
        runs = self._client.beta.threads.runs.with_raw_response
        options: dict[str, Any] = {"limit": limit, "order": "desc"}
        if after is not None:
            options["after"] = after
        return self._fetch(lambda: runs.list(thread_id, **options))

    def list_steps(self, thread_id: str, run_id: str, after: str | None, limit: int) -> Fetched:
        """One page of a run's steps, newest first, after the step id ``after``."""
        steps = self._client.beta.threads.runs.steps.with_raw_response
        options: dict[str, Any] = {"thread_id": thread_id, "limit": limit, "order": "desc"}
        if after is not None:
            options["after"] = after
        return self._fetch(lambda: steps.list(run_id, **options))

    def retrieve_run(self, thread_id: str, run_id: str) -> Fetched:
        runs = self._client.beta.threads.runs.with_raw_response
        return self._fetch(lambda: runs.retrieve(run_id, thread_id=thread_id))

    # The kinds that replaced the Assistants API: batches and fine-tuning jobs are listed newest first
    # (the API's only order), responses have no list and are retrieved by id.

    def list_objects(self, kind: str, after: str | None, limit: int) -> Fetched:
        """One page of the project's batches or fine-tuning jobs, newest first, after the id ``after``."""
        listing = self._listing(kind)
        options: dict[str, Any] = {"limit": limit}
        if after is not None:
            options["after"] = after
        return self._fetch(lambda: listing.list(**options))

    def retrieve_object(self, kind: str, object_id: str) -> Fetched:
        """One batch, fine-tuning job or response, by id."""
        if kind == "response":
            responses = self._client.responses.with_raw_response
            return self._fetch(lambda: responses.retrieve(object_id))
        listing = self._listing(kind)
        return self._fetch(lambda: listing.retrieve(object_id))

    def _listing(self, kind: str) -> Any:
        if kind == "batch":
            return self._client.batches.with_raw_response
        if kind == "fine_tuning.job":
            return self._client.fine_tuning.jobs.with_raw_response
        raise ValueError(f"no list endpoint for {kind!r}")

    def _fetch(self, request: Callable[[], Any]) -> Fetched:
        try:
            response = request()
            body = response.content
        except openai.NotFoundError as exc:
            raise ApiFailure("not_found", self._message(exc), 404) from None
        except openai.RateLimitError as exc:
            raise ApiFailure(
                "rate_limited", self._message(exc), 429, retry_after_seconds(exc.response.headers)
            ) from None
        except openai.InternalServerError as exc:
            raise ApiFailure(
                "server", self._message(exc), exc.status_code, retry_after_seconds(exc.response.headers)
            ) from None
        except openai.APIStatusError as exc:
            raise ApiFailure("client", self._message(exc), exc.status_code) from None
        except openai.APITimeoutError as exc:
            raise ApiFailure("timeout", self._message(exc)) from None
        except openai.APIConnectionError as exc:
            raise ApiFailure("connection", self._message(exc)) from None
        return Fetched(body, self._clock())

    def _message(self, exc: Exception) -> str:
        return redact(f"{type(exc).__name__}: {exc}", [self.api_key])[:300]


class RateLimiter:
    """At most ``per_second`` requests a second across threads (none: no cap)."""

    def __init__(self, per_second: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)


class GaveUp(Exception):
    """A request that failed for good in this sync (the last :class:`ApiFailure` is its cause)."""

    def __init__(self, failure: ApiFailure, reason: str) -> None:
        super().__init__(f"{reason}: {failure}")
        self.failure = failure


@dataclass
class Caller:
    """Makes requests with retries: backoff with jitter, honouring the server's Retry-After.

    A failure that is not retryable (404, 400, 401) is raised at once as :class:`ApiFailure`; a
    retryable one is retried up to ``attempts`` times in all, and raised as :class:`GaveUp` when the
    attempts run out or the server asks to wait longer than ``max_wait`` seconds.
    """

    limiter: RateLimiter
    attempts: int = 4
    max_wait: float = 120.0
    base_delay: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0

    def call(self, request: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            self.limiter.wait()
            with self._lock:
                self.requests += 1
            try:
                return request()
            except ApiFailure as failure:
                if not failure.retryable:
                    raise
                if failure.retry_after is not None and failure.retry_after > self.max_wait:
                    raise GaveUp(failure, f"server asked to retry after {failure.retry_after:g} s") from None
                if attempt == self.attempts:
                    raise GaveUp(failure, f"gave up after {attempt} attempts") from None
                delay = failure.retry_after
                if delay is None:
                    delay = self.base_delay * 2 ** (attempt - 1) * (0.5 + self.jitter())
                with self._lock:
                    self.retries += 1
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
