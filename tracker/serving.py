"""A stdlib HTTP server run on a background thread: the simulator's and ``tracker webhook``'s shared edge.

Subclasses say how to build their ``ThreadingHTTPServer`` (:meth:`BackgroundServer._new_server`) and what
to close before it stops (:meth:`BackgroundServer._before_close`); starting, stopping and the ``with``
block are here once.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self


class BackgroundServer:
    """Serves on ``host:port`` (0: any free port) from a daemon thread named ``thread_name``."""

    thread_name = "http"

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _new_server(self, address: tuple[str, int]) -> ThreadingHTTPServer:
        raise NotImplementedError

    def _before_close(self, server: ThreadingHTTPServer) -> None:
        """Called once serving has stopped, before the socket closes (e.g. to close kept-alive connections)."""

    def root_url(self) -> str:
        """``http://host:port``, once started."""
        if self._httpd is None:
            raise RuntimeError(f"the {self.thread_name} server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError(f"the {self.thread_name} server is already started")
        self._httpd = self._new_server(self._address)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (and whatever :meth:`_before_close` closes)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._before_close(self._httpd)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
