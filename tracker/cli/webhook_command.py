"""``tracker webhook``: receive OpenAI webhook deliveries in the foreground, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click

from tracker.cli.base import Context, cli
from tracker.webhook import SECRET_VARIABLE, WebhookReceiver, WebhookSecretError, WebhookServer, check_secret

EXIT_CONFIG = 2  # as `tracker sync`: usage or configuration error
LOOPBACK = ("127.0.0.1", "localhost")


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), required=True, help="Port to listen on (0: any free port).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="IPv4 address to listen on. Keep the default behind a reverse proxy that terminates TLS.",
)
@click.pass_obj
def webhook(obj: Context, port: int, host: str) -> None:
    """Receive OpenAI webhook deliveries and watch the background responses they name, until Ctrl-C or SIGTERM.

    Each POST is verified with the endpoint's secret, read from OPENAI_WEBHOOK_SECRET (never from the command
    line): bad signatures and timestamps more than 5 minutes off get 400. A response.* event adds its response
    to what `tracker sync` polls (as `tracker watch --response`); batch.* and fine_tuning.job.* events are
    acknowledged (sync follows their lists); other events are ignored. One line per delivery on stderr. Exit
    status: 0 stopped, 1 database error or port in use, 2 usage or configuration error. See docs/webhook.md.
    """
    secret = os.environ.get(SECRET_VARIABLE, "")
    if not secret:
        click.echo(f"tracker: {SECRET_VARIABLE} is not set (the signing secret of the webhook endpoint)", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        check_secret(secret)
    except WebhookSecretError as exc:
        click.echo(f"tracker: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    receiver = WebhookReceiver(obj.engine, secret)
    server = WebhookServer(receiver, host, port, log=lambda line: click.echo(line, err=True))
    try:
        with _stopped_by_sigterm() as stopped:
            try:
                server.start()
            except OSError as exc:
                raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            click.echo(f"tracker webhook: listening on {server.url} (any path). Ctrl-C stops.")
            if host not in LOOPBACK:
                click.echo("tracker: listening beyond this host without TLS: put a TLS proxy in front", err=True)
            stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        receiver.close()


@contextmanager
def _stopped_by_sigterm() -> Iterator[threading.Event]:
    """An event that SIGTERM (systemd's stop) sets, so the server stops as cleanly as on Ctrl-C."""
    stopped = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stopped
        return
    previous = signal.signal(signal.SIGTERM, lambda _signal, _frame: stopped.set())
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGTERM, previous)
