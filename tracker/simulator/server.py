"""The HTTP edge of the simulator: the endpoints of :mod:`~tracker.simulator.routes` under /v1, served from a
:class:`World`.

Stdlib only (``http.server``, one thread per connection, keep-alive). Each request is routed, counted in
:class:`ServerStats`, checked for a bearer key (401 otherwise; the key itself is never logged nor kept),
exposed to the configured :class:`~tracker.simulator.faults.Faults`, then answered by the world. Errors use
the OpenAI body ``{"error": {"message", "type", "param", "code"}}``; every response has an ``x-request-id``.
A rate limit, server error or dropped connection happens before the world sees the request; a malformed
body after it, as when a response is lost on its way back.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tracker.serving import BackgroundServer
from tracker.simulator.errors import ApiError, BadRequest, Conflict, NotFound
from tracker.simulator.faults import FaultDice, Faults
from tracker.simulator.model import World
from tracker.simulator.routes import ROUTES, Route

JSON = dict[str, Any]
UNROUTED = "(no route)"
NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY)."
)
SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"


class ServerStats:
    """Thread-safe counts of requests per (method, route template) and of injected faults per kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._faults: Counter[str] = Counter()

    def count_request(self, method: str, template: str) -> None:
        with self._lock:
            self._requests[(method, template)] += 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    @property
    def requests(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._requests)

    @property
    def faults(self) -> dict[str, int]:
        with self._lock:
            return dict(self._faults)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._requests.values())


class SimulatorServer(BackgroundServer):
    """Serves ``world`` on ``host:port`` (0: any free port) from a background thread; a context manager."""

    thread_name = "simulator"

    def __init__(
        self,
        world: World,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(host, port)
        self.world = world
        self.latency_s = latency_s
        self.stats = ServerStats()
        self._dice = FaultDice(faults or Faults())

    @property
    def faults(self) -> Faults:
        return self._dice.faults

    def set_faults(self, faults: Faults) -> None:
        """Switch faults at runtime; every-n-th counts start again."""
        self._dice = FaultDice(faults)

    @property
    def base_url(self) -> str:
        """What ``OPENAI_BASE_URL`` takes, e.g. ``http://127.0.0.1:8765/v1``."""
        return f"{self.root_url()}/v1"

    def _new_server(self, address: tuple[str, int]) -> _HTTPServer:
        return _HTTPServer(address, self)

    def _before_close(self, server: ThreadingHTTPServer) -> None:
        assert isinstance(server, _HTTPServer)
        server.close_connections()

    def _roll_faults(self, route_kind: str) -> tuple[str | None, float]:
        roll = self._dice.roll(route_kind)
        for kind in (roll.fault, "slow" if roll.delay_s else None):
            if kind is not None:
                self.stats.count_fault(kind)
        return roll.fault, roll.delay_s


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: SimulatorServer) -> None:
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Idle keep-alive connections would otherwise keep their threads waiting after a stop."""
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # already closed by the client
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server_version = "tracker-simulator"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the default would print every request line to stderr."""

    def _handle(self, method: str) -> None:
        app = self.server.app  # type: ignore[attr-defined]
        assert isinstance(app, SimulatorServer)
        raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        route, path_params = _route(method, url.path)
        app.stats.count_request(method, route.template if route else UNROUTED)
        if app.latency_s:
            time.sleep(app.latency_s)
        if route is None:
            self._error(404, f"Invalid URL ({method} {url.path})")
        elif not _authorized(self.headers.get("Authorization")):
            self._error(401, NO_KEY)
        else:
            self._answer(app, route, path_params, url.query, raw_body)

    def _answer(self, app: SimulatorServer, route: Route, path: dict[str, str], query: str, raw_body: bytes) -> None:
        fault, delay_s = app._roll_faults(route.kind)
        if delay_s:
            time.sleep(delay_s)
        if fault == "drop":
            self.close_connection = True  # and nothing is written: the client sees the connection close
            return
        if fault == "rate_limit":
            self._rate_limited(app.faults)
            return
        if fault == "server_error":
            self._error(500, SERVER_ERROR, "server_error")
            return
        try:
            parameters = {name: values[-1] for name, values in parse_qs(query).items()}
            payload = route.endpoint(app.world, path, parameters, _json_object(raw_body))
        except NotFound as exc:
            self._error(404, exc.message, param=exc.param)
            return
        except Conflict as exc:
            self._error(409, exc.message, param=exc.param)
            return
        except ApiError as exc:
            self._error(400, exc.message, param=exc.param)
            return
        except Exception as exc:  # a simulator bug: say so loudly rather than pass it off as an injected fault
            traceback.print_exc()
            self._error(500, f"Simulator bug: {exc!r}", "server_error")
            return
        encoded = json.dumps(payload).encode()
        self._send(200, encoded[: len(encoded) // 2] if fault == "malformed" else encoded)

    def _rate_limited(self, faults: Faults) -> None:
        headers = {}
        if faults.retry_after_s is not None:
            headers["Retry-After"] = _number(faults.retry_after_s)
        if faults.retry_after_ms is not None:
            headers["retry-after-ms"] = str(faults.retry_after_ms)
        self._error(
            429,
            "Rate limit reached for requests. Please try again later.",
            "requests",
            "rate_limit_exceeded",
            headers=headers,
        )

    def _error(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        self._send(status, json.dumps(body).encode(), headers)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _route(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    for route in ROUTES:
        params = route.match(method, path.rstrip("/") or "/")
        if params is not None:
            return route, params
    return None, {}


def _authorized(header: str | None) -> bool:
    scheme, _, key = (header or "").partition(" ")
    return scheme.lower() == "bearer" and bool(key.strip())


def _json_object(raw: bytes) -> JSON:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BadRequest("We could not parse the JSON body of your request. The body must be a JSON object.")
    return body


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
