"""A throwaway PostgreSQL server for the test session.

``PostgresServer`` runs ``initdb`` into a fresh temporary directory and starts a server that listens only on
127.0.0.1 (on a free port) with durability switched off for speed; ``stop()`` kills it and deletes
everything. PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` OS user.

If ``TRACKER_TEST_PG_URL`` is set (a SQLAlchemy URL of an existing server), ``postgres_for_tests()``
returns an ``ExternalPostgres`` that uses that server instead of starting one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

__all__ = ["ExternalPostgres", "PostgresServer", "find_pg_bin", "postgres_for_tests"]

EXTERNAL_URL_ENV = "TRACKER_TEST_PG_URL"
PG_BIN_ENV = "PG_BIN"
OS_USER = "postgres"  # the OS account the server runs as when we are root
ROLE = "postgres"  # the superuser role created by `initdb -U postgres`
_HOST = "127.0.0.1"
_TIMEOUT_S = 120


def _has_initdb(directory: Path) -> bool:
    return (directory / "initdb").is_file() and (directory / "pg_ctl").is_file()


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> numeric version, so that 15 sorts after 9.6
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None if PostgreSQL isn't installed.

    Search order: ``$PG_BIN``; ``pg_config --bindir``; the newest ``/usr/lib/postgresql/*/bin`` (Debian and
    Ubuntu don't put the server binaries on PATH); finally ``initdb`` on PATH. An explicitly set ``$PG_BIN``
    that doesn't contain ``initdb`` gives None rather than silently picking some other installation.
    """
    explicit = os.environ.get(PG_BIN_ENV)
    if explicit:
        return Path(explicit) if _has_initdb(Path(explicit)) else None

    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            bindir = Path(result.stdout.strip())
            if result.stdout.strip() and _has_initdb(bindir):
                return bindir

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_initdb(p)]
    if candidates:
        return max(candidates, key=_version_key)

    initdb = shutil.which("initdb")
    if initdb is not None and _has_initdb(Path(initdb).resolve().parent):
        return Path(initdb).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _create_database(admin_libpq_url: str, name: str) -> None:
    with psycopg.connect(admin_libpq_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


class PostgresServer:
    """A private PostgreSQL cluster in a temp dir, listening on 127.0.0.1:<free port>. A context manager."""

    def __init__(self) -> None:
        self._bin: Path | None = None
        self._tmp: Path | None = None
        self._port: int | None = None
        self._as_root = os.geteuid() == 0

    # -- paths -----------------------------------------------------------------------------------------------

    @property
    def _data(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "data"

    @property
    def _socket_dir(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "socket"

    @property
    def _log(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "postgres.log"

    # -- running commands ------------------------------------------------------------------------------------

    def _command(self, argv: list[str]) -> list[str]:
        """``argv`` as run by the server's OS user: ourselves, or ``postgres`` when we are root."""
        if not self._as_root:
            return argv
        runuser = shutil.which("runuser")
        if runuser is not None:
            return [runuser, "-u", OS_USER, "--", *argv]
        su = shutil.which("su") or "su"
        return [su, OS_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self._tmp is not None
        # cwd: the server user may not be able to enter our working directory (e.g. /root).
        result = subprocess.run(
            self._command(argv),
            cwd=self._tmp,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(argv)} failed with exit code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}".rstrip()
            )
        return result

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._tmp is not None:
            raise RuntimeError("PostgresServer already started")
        pg_bin = find_pg_bin()
        if pg_bin is None:
            where = f"${PG_BIN_ENV}={os.environ[PG_BIN_ENV]}" if os.environ.get(PG_BIN_ENV) else "this machine"
            raise RuntimeError(
                f"PostgreSQL server binaries (initdb, pg_ctl) not found on {where}; "
                "install PostgreSQL (Debian: apt-get install postgresql) or set $PG_BIN to its bin directory"
            )
        self._bin = pg_bin
        owner: pwd.struct_passwd | None = None
        if self._as_root:
            try:
                owner = pwd.getpwnam(OS_USER)
            except KeyError:
                raise RuntimeError(
                    f"PostgreSQL refuses to run as root, and there is no {OS_USER!r} OS user to run it as"
                ) from None

        # Under /tmp (not $TMPDIR, which may sit below a directory the postgres user can't traverse).
        base = "/tmp" if os.path.isdir("/tmp") else None
        self._tmp = Path(tempfile.mkdtemp(prefix="tracker-pg-", dir=base))
        atexit.register(self.stop)
        try:
            self._tmp.chmod(0o755)
            self._socket_dir.mkdir()
            if owner is not None:
                os.chown(self._tmp, owner.pw_uid, owner.pw_gid)
                os.chown(self._socket_dir, owner.pw_uid, owner.pw_gid)
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise

    def _initdb(self) -> None:
        assert self._bin is not None
        self._run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self._data),
                "-A",
                "trust",
                "-U",
                ROLE,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        )

    def _start_server(self) -> None:
        assert self._bin is not None
        conf = self._data / "postgresql.conf"
        base_conf = conf.read_text()
        for _attempt in range(3):
            # The port can be taken between probing and binding; retry with another one if so.
            self._port = _free_port()
            settings = {
                "listen_addresses": f"'{_HOST}'",
                "port": str(self._port),
                "unix_socket_directories": f"'{self._socket_dir}'",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
            conf.write_text(
                base_conf + "\n# tests/pgserver.py\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
            )
            result = self._run(
                [
                    str(self._bin / "pg_ctl"),
                    "-D",
                    str(self._data),
                    "-l",
                    str(self._log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                check=False,
            )
            if result.returncode == 0:
                return
            log = _tail(self._log)
            if "could not bind" not in log and "already in use" not in log:
                break
            # Stop whatever half-started, then try another port.
            self._run([str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "stop"], check=False)
        raise RuntimeError(
            f"pg_ctl start failed (exit code {result.returncode}):\n{result.stdout}{result.stderr}".rstrip()
            + f"\n--- tail of {self._log} ---\n{_tail(self._log)}"
        )

    def stop(self) -> None:
        """Kill the server (``pg_ctl -m immediate``) and remove its directory. Safe to call more than once."""
        atexit.unregister(self.stop)
        tmp = self._tmp
        if tmp is None:
            return
        try:
            pid_file = self._data / "postmaster.pid"
            if self._bin is not None and pid_file.exists():
                result = self._run(
                    [str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "-w", "stop"],
                    check=False,
                )
                if result.returncode != 0 and pid_file.exists():
                    # Last resort: SIGQUIT is PostgreSQL's immediate shutdown.
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGQUIT)
        finally:
            self._tmp = None
            self._port = None
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- connecting ------------------------------------------------------------------------------------------

    def _libpq_url(self, dbname: str) -> str:
        if self._port is None:
            raise RuntimeError("PostgresServer is not running")
        return f"postgresql://{ROLE}@{_HOST}:{self._port}/{dbname}"

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of ``dbname`` on this server (psycopg 3 driver)."""
        return self._libpq_url(dbname).replace("postgresql://", "postgresql+psycopg://", 1)

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` and return its SQLAlchemy URL."""
        _create_database(self._libpq_url("postgres"), name)
        return self.url(name)


class ExternalPostgres:
    """An existing server given by a SQLAlchemy URL (``$TRACKER_TEST_PG_URL``); start/stop do nothing.

    Databases are created through a connection to the URL's own database; ``url(name)`` is the given URL with
    the database replaced. A plain ``postgresql://`` URL is taken to mean the psycopg 3 driver.
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise ValueError(f"${EXTERNAL_URL_ENV} must be a PostgreSQL URL, not {parsed.drivername!r}")
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._url = parsed

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass

    def url(self, dbname: str = "postgres") -> str:
        return self._url.set(database=dbname).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        admin = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        _create_database(admin, name)
        return self.url(name)


def postgres_for_tests() -> PostgresServer | ExternalPostgres:
    """``ExternalPostgres`` if ``$TRACKER_TEST_PG_URL`` is set, else a ``PostgresServer`` (not started)."""
    external = os.environ.get(EXTERNAL_URL_ENV)
    if external:
        return ExternalPostgres(external)
    return PostgresServer()
