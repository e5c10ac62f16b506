"""`tracker webhook`: OpenAI's deliveries, signed here exactly as OpenAI signs them, POSTed over loopback to
the real server on SQLite and PostgreSQL.

Verified ``response.*`` events put their response on the watch list; batch and fine-tuning events are
acknowledged, other events ignored; anything unverified is refused with 400 and leaves no trace. The secret
and the signature never appear in an answer, a log line or the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import openai
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from tracker.cli import cli
from tracker.store import object_watch, open_database
from tracker.store.engine import make_engine
from tracker.webhook import MAX_BODY_BYTES, SECRET_VARIABLE, WebhookReceiver, WebhookServer

SECRET = "whsec_" + base64.b64encode(b"tracker-webhook-test-key-4f9a2c71").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody-else-entirely-0000000000").decode()
TRACKER = [sys.executable, "-c", "from tracker.cli import main; main()"]
# urllib would otherwise honour http_proxy even for 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_deliveries = itertools.count(1)


def sign(
    body: bytes, secret: str = SECRET, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers: HMAC-SHA256 of "id.timestamp.body" with the base64 key after whsec_.

    Each call is a new delivery (a fresh webhook-id) unless ``webhook_id`` names one.
    """
    webhook_id = webhook_id or f"msg_{next(_deliveries)}"
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    signature = "v1," + base64.b64encode(digest).decode()
    return {"webhook-id": webhook_id, "webhook-timestamp": stamp, "webhook-signature": signature}


def event(event_type: str, object_id: str, event_id: str = "evt_1") -> bytes:
    payload = {"id": event_id, "object": "event", "created_at": 1_750_000_000, "type": event_type}
    return json.dumps({**payload, "data": {"id": object_id}}).encode()


def watched(engine: Engine) -> list[tuple[str, str, str]]:
    return [(row["kind"], row["object_id"], row["status"]) for row in object_watch.watched_objects_rows(engine)]


@dataclass
class Running:
    url: str
    lines: list[str] = field(default_factory=list)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with OPENER.open(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except HTTPError as error:
            with error:
                return error.code, json.loads(error.read())

    def deliver(self, body: bytes, **signing: Any) -> tuple[int, dict[str, Any]]:
        return self.post(body, sign(body, **signing))


@pytest.fixture
def server(engine: Engine) -> Iterator[Running]:
    receiver = WebhookReceiver(engine, SECRET)
    running = Running("")
    with WebhookServer(receiver, log=running.lines.append) as webhook_server:
        running.url = webhook_server.url
        yield running
    receiver.close()


# --- the test signer is OpenAI's -----------------------------------------------------------------------


def test_signer_reproduces_the_standard_webhooks_test_vector() -> None:
    # The vector published with the Standard Webhooks specification (github.com/standard-webhooks).
    headers = sign(
        b'{"test": 2432232314}',
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signer_is_accepted_by_the_sdk_and_a_tampered_body_is_not() -> None:
    client = openai.OpenAI(api_key="unused", webhook_secret=SECRET)
    try:
        body = event("response.completed", "resp_1")
        client.webhooks.verify_signature(body, sign(body))
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.verify_signature(body.replace(b"resp_1", b"resp_2"), sign(body))
    finally:
        client.close()


# --- what each verified event does ------------------------------------------------------------------------


def test_response_event_watches_its_response(engine: Engine, server: Running) -> None:
    status, answer = server.deliver(event("response.completed", "resp_abc", "evt_9"))
    assert (status, answer) == (200, {"outcome": "registered"})
    assert watched(engine) == [("response", "resp_abc", "active")]
    assert server.lines == ["webhook: 200 registered type=response.completed event=evt_9 response=resp_abc"]


def test_every_response_event_type_watches_its_response(engine: Engine, server: Running) -> None:
    types = ["response.completed", "response.failed", "response.cancelled", "response.incomplete"]
    for n, event_type in enumerate(types):
        assert server.deliver(event(event_type, f"resp_{n}")) == (200, {"outcome": "registered"})
    assert watched(engine) == [("response", f"resp_{n}", "active") for n in range(len(types))]


def test_listed_kind_events_are_acknowledged_without_watching(engine: Engine, server: Running) -> None:
    for event_type in ("batch.completed", "batch.failed", "fine_tuning.job.succeeded", "fine_tuning.job.failed"):
        assert server.deliver(event(event_type, "batch_or_job_1")) == (200, {"outcome": "acknowledged"}), event_type
    assert watched(engine) == []


def test_other_verified_events_are_ignored(engine: Engine, server: Running) -> None:
    assert server.deliver(event("eval.run.succeeded", "evalrun_1")) == (200, {"outcome": "ignored"})
    assert watched(engine) == []


def test_an_ended_response_named_again_is_left_ended(engine: Engine, server: Running) -> None:
    object_watch.watch_objects(engine, "response", ["resp_old"], 1.0)
    assert [claimed.object_id for claimed in object_watch.claim_objects(engine, 7, 2.0, 2.0, 60.0, 10)] == ["resp_old"]
    ended = object_watch.ObjectOutcome("response", "resp_old", "completed", terminal=True)
    object_watch.release_objects(engine, 7, [ended], 3.0)
    assert watched(engine) == [("response", "resp_old", "ended")]
    # A redelivery after a sync saw the response end must not make the next sync poll it again.
    assert server.deliver(event("response.completed", "resp_old")) == (200, {"outcome": "already watched"})
    assert watched(engine) == [("response", "resp_old", "ended")]


# --- what is refused ------------------------------------------------------------------------------------

BODY = event("response.completed", "resp_refused")
MISMATCH = "The given webhook signature does not match the expected signature"


def _without(*names: str) -> dict[str, str]:
    return {name: value for name, value in sign(BODY).items() if name not in names}


def refused() -> dict[str, tuple[bytes, dict[str, str], str]]:
    """case: (body, headers, the reason answered), signed when the test runs: signed at collection,
    the timestamps would drift into (or out of) the tolerance window before a long suite reaches it."""
    return {
        "tampered body": (BODY.replace(b"resp_refused", b"resp_injected"), sign(BODY), MISMATCH),
        "wrong secret": (BODY, sign(BODY, secret=OTHER_SECRET), MISMATCH),
        "signature of another delivery id": (BODY, {**sign(BODY), "webhook-id": "msg_other"}, MISMATCH),
        "signature without v1 prefix": (BODY, {**sign(BODY), "webhook-signature": "v1,"}, MISMATCH),
        "stale timestamp": (BODY, sign(BODY, timestamp=int(time.time()) - 300 - 30), "Webhook timestamp is too old"),
        "future timestamp": (BODY, sign(BODY, timestamp=int(time.time()) + 300 + 30), "Webhook timestamp is too new"),
        "timestamp not a number": (
            BODY,
            {**sign(BODY), "webhook-timestamp": "soon"},
            "Invalid webhook timestamp format",
        ),
        "no webhook-id": (BODY, _without("webhook-id"), "missing header: webhook-id"),
        "no webhook-timestamp": (BODY, _without("webhook-timestamp"), "missing header: webhook-timestamp"),
        "no webhook-signature": (BODY, _without("webhook-signature"), "missing header: webhook-signature"),
        "no headers": (BODY, {}, "missing headers: webhook-id, webhook-timestamp, webhook-signature"),
    }


def test_unverified_deliveries_are_refused_and_leave_no_trace(engine: Engine, server: Running) -> None:
    # One server and database for every case (a fresh PostgreSQL database per case would dominate the run).
    cases = refused()
    for case, (body, headers, reason) in cases.items():
        assert server.post(body, headers) == (400, {"error": reason}), case
        assert server.lines[-1] == f"webhook: 400 rejected: {reason}", case  # nothing from the body
    assert len(server.lines) == len(cases)
    assert watched(engine) == []


MALFORMED: dict[str, tuple[bytes, str]] = {
    "not JSON": (b"not json", "the body is not JSON"),
    "not UTF-8": (b"\xff\xfe", "the body is not UTF-8"),
    "no type": (json.dumps({"id": "evt_1", "data": {"id": "resp_1"}}).encode(), "the event has no type"),
    "id not a string": (
        json.dumps({"id": "evt_1", "type": "response.completed", "data": {"id": 5}}).encode(),
        "the event names no response id",
    ),
    "no data": (
        json.dumps({"id": "evt_1", "type": "response.completed"}).encode(),
        "the event names no response id",
    ),
}


def test_verified_but_malformed_events_are_refused(engine: Engine, server: Running) -> None:
    for case, (body, reason) in MALFORMED.items():
        assert server.deliver(body) == (400, {"error": reason}), case
    assert watched(engine) == []


def _raw_post(url: str, method: str, headers: dict[str, str]) -> int:
    """Sends the request line and headers only, and returns the status answered."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest(method, "/", skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def test_the_http_edge_refuses_what_it_will_not_read() -> None:
    engine = make_engine("sqlite://")  # never written: nothing here gets past the edge
    receiver = WebhookReceiver(engine, SECRET)
    lines: list[str] = []
    try:
        with WebhookServer(receiver, log=lines.append) as webhook_server:
            too_large = {"Content-Length": str(MAX_BODY_BYTES + 1), **sign(BODY)}
            assert _raw_post(webhook_server.url, "POST", too_large) == 413  # answered from Content-Length alone
            assert _raw_post(webhook_server.url, "POST", sign(BODY)) == 411  # no Content-Length
            assert _raw_post(webhook_server.url, "GET", {}) == 405
        big = event("response.completed", "resp_big").replace(b'"object"', b" " * MAX_BODY_BYTES + b'"object"')
        assert receiver.handle(big, sign(big)).status == 413  # the same cap without HTTP
    finally:
        receiver.close()
        engine.dispose()
    assert lines == [
        f"webhook: 413 too large: the body exceeds {MAX_BODY_BYTES} bytes",
        "webhook: 411 rejected: a Content-Length is required",
    ]


# --- retries and concurrency ------------------------------------------------------------------------------


def test_redelivery_registers_nothing_new(engine: Engine, server: Running) -> None:
    body = event("response.completed", "resp_again")
    headers = sign(body, webhook_id="msg_retried")
    assert server.post(body, headers) == (200, {"outcome": "registered"})
    # OpenAI retries with the same webhook-id and a fresh timestamp and signature.
    assert server.deliver(body, webhook_id="msg_retried") == (200, {"outcome": "duplicate"})
    assert watched(engine) == [("response", "resp_again", "active")]


def test_redelivery_to_another_receiver_registers_nothing_new(engine: Engine, server: Running) -> None:
    body = event("response.completed", "resp_again")
    assert server.deliver(body, webhook_id="msg_retried")[0] == 200
    other = WebhookReceiver(engine, SECRET)
    try:
        assert other.handle(body, sign(body, webhook_id="msg_retried")).outcome == "already watched"
    finally:
        other.close()
    assert watched(engine) == [("response", "resp_again", "active")]


def test_concurrent_receivers_watch_each_response_once(db_url: str) -> None:
    engines = [open_database(db_url), open_database(db_url)]  # as two `tracker webhook` processes
    receivers = [WebhookReceiver(engine, SECRET) for engine in engines]
    servers = [WebhookServer(receiver, log=lambda line: None).start() for receiver in receivers]
    ids = [f"resp_{n}" for n in range(6)]
    deliveries = [(server.url, object_id) for object_id in ids for server in servers for _ in range(2)]
    statuses: list[int] = []
    go = threading.Barrier(len(deliveries), timeout=10)

    def deliver(url: str, object_id: str) -> None:
        body = event("response.completed", object_id)
        go.wait()
        statuses.append(Running(url).deliver(body, webhook_id=f"msg_{object_id}")[0])

    threads = [threading.Thread(target=deliver, args=delivery) for delivery in deliveries]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert statuses == [200] * len(deliveries)
        assert watched(engines[0]) == [("response", object_id, "active") for object_id in ids]
    finally:
        for server, receiver, engine in zip(servers, receivers, engines, strict=True):
            server.stop()
            receiver.close()
            engine.dispose()


@dataclass
class RacingRegister:
    """``watch_objects`` that loses its first insert to a rival receiver, as a unique-key race would."""

    calls: int = 0

    def __call__(self, engine: Engine, kind: str, object_ids: Iterable[str], now: float) -> tuple[int, int]:
        self.calls += 1
        if self.calls == 1:
            object_watch.watch_objects(engine, kind, object_ids, now)  # the rival commits first
            raise IntegrityError("INSERT INTO watched_objects ...", None, Exception("duplicate key value"))
        return object_watch.watch_objects(engine, kind, object_ids, now)


def test_a_lost_insert_race_is_retried_once_and_counts_as_watched(engine: Engine) -> None:
    register = RacingRegister()
    receiver = WebhookReceiver(engine, SECRET, register=register)
    try:
        body = event("response.completed", "resp_raced")
        delivery = receiver.handle(body, sign(body))
    finally:
        receiver.close()
    assert (delivery.status, delivery.outcome, register.calls) == (200, "already watched", 2)
    assert watched(engine) == [("response", "resp_raced", "active")]


def test_a_database_failure_answers_500_and_the_retry_still_registers(engine: Engine) -> None:
    def unavailable(engine: Engine, kind: str, object_ids: Iterable[str], now: float) -> tuple[int, int]:
        raise OperationalError("INSERT INTO watched_objects ...", None, Exception("could not connect"))

    failing = WebhookReceiver(engine, SECRET, register=unavailable)
    body = event("response.completed", "resp_later")
    try:
        delivery = failing.handle(body, sign(body, webhook_id="msg_later"))
        assert (delivery.status, delivery.outcome) == (500, "failed")
        assert "could not connect" in delivery.log_line()
        assert "could not connect" not in json.dumps(delivery.answer())
        # OpenAI retries; the failed attempt was not remembered as answered.
        failing._register = object_watch.watch_objects
        assert failing.handle(body, sign(body, webhook_id="msg_later")).outcome == "registered"
    finally:
        failing.close()
    assert watched(engine) == [("response", "resp_later", "active")]


# --- the command ----------------------------------------------------------------------------------------


def test_missing_secret_exits_2_naming_the_variable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never-opened.db'}"
    result = CliRunner().invoke(cli, ["--database-url", url, "webhook", "--port", "0"], env={SECRET_VARIABLE: None})
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"tracker: {SECRET_VARIABLE} is not set (the signing secret of the webhook endpoint)"
    ]
    assert not (tmp_path / "never-opened.db").exists()  # refused before touching the database


def test_malformed_secret_exits_2_without_repeating_it(tmp_path: Path) -> None:
    secret = "whsec_not*base64!"
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    result = CliRunner().invoke(cli, ["--database-url", url, "webhook", "--port", "0"], env={SECRET_VARIABLE: secret})
    assert result.exit_code == 2
    assert SECRET_VARIABLE in result.output
    assert "not*base64" not in result.output


def test_the_secret_is_not_a_command_line_option() -> None:
    result = CliRunner().invoke(cli, ["webhook", "--port", "0", "--secret", SECRET], env={SECRET_VARIABLE: None})
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_the_command_serves_until_sigterm_and_never_shows_the_secret(db_url: str, tmp_path: Path) -> None:
    env = {**os.environ, SECRET_VARIABLE: SECRET}
    command = [*TRACKER, "--database-url", db_url, "webhook", "--port", "0"]
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    signatures: list[str] = []
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "tracker webhook did not start"
        banner = process.stdout.readline()
        url = banner.split("listening on ")[1].split()[0]
        running = Running(url)
        body = event("response.completed", "resp_cli")
        headers = sign(body)
        signatures.append(headers["webhook-signature"])
        assert running.post(body, headers) == (200, {"outcome": "registered"})
        forged = sign(body, secret=OTHER_SECRET)
        signatures.append(forged["webhook-signature"])
        assert running.post(body, forged)[0] == 400
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert err.splitlines() == [
        "webhook: 200 registered type=response.completed event=evt_1 response=resp_cli",
        "webhook: 400 rejected: The given webhook signature does not match the expected signature",
    ]
    engine = open_database(db_url)
    try:
        assert watched(engine) == [("response", "resp_cli", "active")]
        with engine.connect() as connection:
            stored = json.dumps([list(row) for row in connection.execute(text("SELECT * FROM watched_objects"))])
    finally:
        engine.dispose()
    key = SECRET.removeprefix("whsec_")
    for shown in (banner + out + err, stored):
        assert key not in shown
        for signature in signatures:
            assert signature.removeprefix("v1,") not in shown
