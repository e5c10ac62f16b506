"""Receiving OpenAI webhook deliveries: verify each one, and watch the background responses they name.

Theory of operation. OpenAI signs every delivery the Standard Webhooks way (headers ``webhook-id``,
``webhook-timestamp``, ``webhook-signature``); :meth:`WebhookReceiver.handle` checks it with the SDK's own
``client.webhooks.unwrap`` and turns the verified event into one :class:`Delivery` (HTTP status, outcome,
one log line) by this table:

====================================  ======  ===========================================================
event                                 status  what happens
====================================  ======  ===========================================================
unsigned, mis-signed, stale, no JSON  400     nothing (``rejected``)
body over :data:`MAX_BODY_BYTES`      413     nothing (``too large``)
``response.*``                        200     ``watch_objects(engine, "response", [data.id], now)``
``batch.*``, ``fine_tuning.job.*``    200     nothing (``acknowledged``): ``tracker sync`` lists them
any other type                        200     nothing (``ignored``)
the database fails                    500     nothing; OpenAI retries the delivery later
====================================  ======  ===========================================================

OpenAI retries a delivery until it is answered 2xx, so the same ``webhook-id`` may come again: the
receiver remembers the ids it answered (``duplicate``), and ``watch_objects`` is idempotent besides, which
also makes receivers in several processes safe. The secret and the signature are never logged, returned
or stored; the body and headers are never logged. :class:`WebhookServer` is the thin HTTP edge (stdlib,
one thread per connection, as the simulator's).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from tracker.errors import TrackerError
from tracker.serving import BackgroundServer
from tracker.store.object_watch import watch_objects

SECRET_VARIABLE = "OPENAI_WEBHOOK_SECRET"  # the SDK's own variable (openai.OpenAI(webhook_secret=...))
MAX_BODY_BYTES = 1 << 20  # OpenAI's events carry ids, not objects: a few hundred bytes
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
RESPONSE_KIND = "response"
# `tracker sync` follows the list endpoints of these kinds, so their events add nothing it would miss.
LISTED_PREFIXES = ("batch.", "fine_tuning.job.")
MAX_ID_LENGTH = 255  # watched_objects.object_id
REMEMBERED_DELIVERIES = 10_000

Register = Callable[[Engine, str, Iterable[str], float], tuple[int, int]]


def watch_new(engine: Engine, kind: str, object_ids: Iterable[str], now: float) -> tuple[int, int]:
    """``watch_objects`` that leaves a known response as it is: a redelivered event (OpenAI retries until
    answered 2xx) must not make a sync poll again a response it already saw end."""
    return watch_objects(engine, kind, object_ids, now, revive=False)


class WebhookSecretError(TrackerError):
    """The webhook secret cannot be used as given (its value is never repeated)."""


@dataclass(frozen=True)
class Delivery:
    """What one delivery came to: the HTTP status, the outcome, and what the log line may show."""

    status: int
    outcome: str
    event_type: str | None = None
    event_id: str | None = None
    response_id: str | None = None
    reason: str | None = None  # why it was refused or failed; never the body, a header or the secret

    def answer(self) -> dict[str, str]:
        """The JSON body of the HTTP answer (a server failure's reason stays in the log)."""
        if self.status >= 500:
            return {"error": "the delivery could not be recorded; retry later"}
        if self.status >= 400:
            return {"error": self.reason or self.outcome}
        return {"outcome": self.outcome}

    def log_line(self) -> str:
        fields = [("type", self.event_type), ("event", self.event_id), ("response", self.response_id)]
        shown = "".join(f" {name}={_printable(value)}" for name, value in fields if value is not None)
        return f"webhook: {self.status} {self.outcome}{shown}" + (f": {self.reason}" if self.reason else "")


class WebhookReceiver:
    """Verifies deliveries with ``secret`` and registers the response ids they name in ``engine``.

    Thread-safe. ``register`` and ``clock`` are the storage call and the time it is given (tests swap them).
    """

    def __init__(
        self,
        engine: Engine,
        secret: str,
        *,
        register: Register = watch_new,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_secret(secret)
        self._engine = engine
        self._secret = secret
        self._register = register
        self._clock = clock
        # No request is ever sent: the client is only the SDK's verifier and event parser.
        self._client = openai.OpenAI(api_key="unused", webhook_secret=secret, max_retries=0)
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Delivery:
        """Verify one delivery (``headers``: any case of names) and act on its event."""
        if len(body) > MAX_BODY_BYTES:
            return Delivery(413, "too large", reason=f"the body exceeds {MAX_BODY_BYTES} bytes")
        wanted = {name: _header(headers, name) for name in HEADERS}
        missing = [name for name, value in wanted.items() if not value]
        if missing:
            noun = "header" if len(missing) == 1 else "headers"
            return Delivery(400, "rejected", reason=f"missing {noun}: {', '.join(missing)}")
        try:
            event = self._client.webhooks.unwrap(body, wanted, secret=self._secret)
        except ValueError as exc:
            return Delivery(400, "rejected", reason=_rejection(exc))
        if self._seen(wanted["webhook-id"]):
            return Delivery(200, "duplicate", _string(event, "type"), _string(event, "id"))
        delivery = self._act(event)
        if delivery.status < 300:
            self._remember(wanted["webhook-id"])
        return delivery

    def _act(self, event: object) -> Delivery:
        # unwrap() parses leniently (no validation): a verified body may still lack what we need.
        event_type, event_id = _string(event, "type"), _string(event, "id")
        if event_type is None:
            return Delivery(400, "rejected", event_id=event_id, reason="the event has no type")
        if event_type.startswith(LISTED_PREFIXES):
            return Delivery(200, "acknowledged", event_type, event_id)
        if not event_type.startswith(f"{RESPONSE_KIND}."):
            return Delivery(200, "ignored", event_type, event_id)
        response_id = _string(getattr(event, "data", None), "id")
        if not response_id or len(response_id) > MAX_ID_LENGTH:
            return Delivery(400, "rejected", event_type, event_id, reason="the event names no response id")
        try:
            added, _ = self._watch(response_id)
        except SQLAlchemyError as exc:
            reason = "database error: " + str(getattr(exc, "orig", None) or exc).splitlines()[0]
            return Delivery(500, "failed", event_type, event_id, response_id, reason)
        outcome = "registered" if added else "already watched"
        return Delivery(200, outcome, event_type, event_id, response_id)

    def _watch(self, response_id: str) -> tuple[int, int]:
        try:
            return self._register(self._engine, RESPONSE_KIND, [response_id], self._clock())
        except IntegrityError:
            # Another receiver inserted the same id between our read and our insert: the retry sees its row.
            return self._register(self._engine, RESPONSE_KIND, [response_id], self._clock())

    def _seen(self, webhook_id: str) -> bool:
        with self._lock:
            return webhook_id in self._answered

    def _remember(self, webhook_id: str) -> None:
        with self._lock:
            self._answered[webhook_id] = None
            while len(self._answered) > REMEMBERED_DELIVERIES:
                self._answered.popitem(last=False)


def check_secret(secret: str) -> None:
    """Raise :class:`WebhookSecretError` unless the SDK can use ``secret`` (``whsec_`` + base64, or raw)."""
    if not secret:
        raise WebhookSecretError(f"{SECRET_VARIABLE} is empty")
    if secret.startswith("whsec_"):
        try:
            # The same decoding as the SDK's verifier, which would otherwise fail on every delivery.
            base64.b64decode(secret.removeprefix("whsec_"))
        except binascii.Error:
            raise WebhookSecretError(
                f"{SECRET_VARIABLE} is not a valid secret: whsec_ must be followed by base64"
            ) from None


def _header(headers: Mapping[str, str], name: str) -> str:
    """The header ``name`` (lower case) whatever the case it came in, or "" when absent."""
    if name in headers:
        return headers[name]
    return next((value for key, value in headers.items() if key.lower() == name), "")


def _rejection(exc: ValueError) -> str:
    # The SDK's own messages name no secret, signature or body; a UnicodeDecodeError's would quote the body.
    if isinstance(exc, openai.InvalidWebhookSignatureError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return "the body is not UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return "the body is not JSON"
    return "the delivery cannot be verified"


def _string(thing: object, attribute: str) -> str | None:
    value = getattr(thing, attribute, None)
    return value if isinstance(value, str) else None


def _printable(value: str) -> str:
    return value[:200] if value.isprintable() else repr(value[:200])


# --- the HTTP edge -----------------------------------------------------------------------------------


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class WebhookServer(BackgroundServer):
    """Serves a :class:`WebhookReceiver` on ``host:port`` (0: any free port) from a background thread.

    Any path accepts a POST. ``log`` gets one line per delivery. A context manager.
    """

    thread_name = "webhook"

    def __init__(
        self,
        receiver: WebhookReceiver,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] = _stderr_line,
    ) -> None:
        super().__init__(host, port)
        self.receiver = receiver
        self._log_lock = threading.Lock()
        self._log = log

    @property
    def url(self) -> str:
        return f"{self.root_url()}/"

    def log(self, line: str) -> None:
        with self._log_lock:
            self._log(line)

    def _new_server(self, address: tuple[str, int]) -> _HTTPServer:
        return _HTTPServer(address, self)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections in a burst of deliveries (each then waits a 1 s SYN retry).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: WebhookServer) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line instead of a traceback (a client that hung up or timed out)."""
        self.app.log(f"webhook: connection error: {sys.exc_info()[1]!r}")


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one delivery per connection, so a stop never waits on an idle keep-alive connection.
    server_version = "tracker-webhook"
    timeout = 30  # seconds a client may take to send its request (a slow one holds only its own thread)

    def do_POST(self) -> None:
        app: WebhookServer = self.server.app  # type: ignore[attr-defined]
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            delivery = Delivery(411, "rejected", reason="a Content-Length is required")
        elif int(length) > MAX_BODY_BYTES:  # refused unread
            delivery = Delivery(413, "too large", reason=f"the body exceeds {MAX_BODY_BYTES} bytes")
        else:
            body = self.rfile.read(int(length))
            try:
                delivery = app.receiver.handle(body, {name: self.headers.get(name, "") for name in HEADERS})
            except Exception as exc:  # a bug: answer 500 so OpenAI retries, and say what it was
                delivery = Delivery(500, "failed", reason=f"internal error: {type(exc).__name__}")
        app.log(delivery.log_line())  # before answering: once answered, the line is there
        self._send(delivery.status, delivery.answer())

    def do_GET(self) -> None:
        self._send(405, {"error": "webhook deliveries are POSTed"}, allow="POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the default would print every request line; the server logs one line per delivery."""

    def _send(self, status: int, answer: Mapping[str, str], allow: str | None = None) -> None:
        encoded = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        with contextlib.suppress(OSError):  # the client hung up; the delivery was already handled
            self.wfile.write(encoded)
