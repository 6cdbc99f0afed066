"""Running the HTTP server: in the foreground (``cambrian serve``) or in a background thread (tests,
benchmarks, notebooks).

The address is reported once the socket is bound (with ``port=0`` the system picks a free port and the
reported URL says which); from then on ``/health`` answers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    """uvicorn's server, telling ``on_ready`` the bound URL after startup."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str], None]):
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.servers and self.servers[0].sockets:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.on_ready(f"http://{host}:{port}")


def _config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, on_ready: Callable[[str], None] = print):
    """Serve ``app`` until interrupted (Ctrl-C / SIGTERM stop it gracefully)."""
    _Server(_config(app, host, port), on_ready).run()


@contextlib.contextmanager
def background(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 60) -> Iterator[str]:
    """Serve ``app`` from a daemon thread for the ``with`` block; yields its base URL."""
    ready = threading.Event()
    url: list[str] = []
    server = _Server(_config(app, host, port), lambda u: (url.append(u), ready.set()))
    thread = threading.Thread(target=server.run, name="cambrian-http", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        server.should_exit = True
        raise RuntimeError(f"the server did not start within {timeout} s")
    try:
        yield url[0]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
