"""The daemon's HTTP server: ``/metrics`` and the dashboard, one listener.

Routes come from their owners (``daemon.py`` collects them); this module only binds, serves
and stops. It is a child of the root supervisor like the api: started after the runs, stopped
before them. The socket is bound here, before uvicorn starts, so a port in use is a clear
``DaemonError`` naming ``http.port`` and port 0 still yields the real URL.

uvicorn serves on the daemon's own event loop; its signal capture is switched off, since the
daemon owns SIGINT and SIGTERM (``cli.cmd_up``). It is bound to loopback unless
``http.host`` says otherwise (README, "The dashboard and /metrics").
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Generator, Sequence

import anyio
import structlog
import uvicorn
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from warden.config.settings import HttpSettings
from warden.supervisor.errors import DaemonError

__all__ = ("WebServer",)

log = structlog.get_logger("warden.web")

_GRACE_S = 1
"""How long open responses (a dashboard's event stream) get to finish at shutdown."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the daemon handles its signals; uvicorn must not take them over


class WebServer:
    """Binds ``settings.host:settings.port`` when made (so the daemon can refuse to start
    before anything runs); ``run`` serves routes on it until cancelled."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self.url: str | None = None
        self._socket = self._bind()

    def _bind(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc})"
            raise DaemonError(
                f"http.port: {host}:{port} {why}; set [http] port (0 picks a free one) or "
                "enabled = false") from exc
        sock.listen(128)
        sock.setblocking(False)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        self.url = f"http://{shown}:{bound_port}"
        return sock

    def close(self) -> None:
        """Release the socket of a server that never ran."""
        self._socket.close()

    async def run(self, routes: Sequence[BaseRoute], *,
                  task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        config = uvicorn.Config(Starlette(routes=list(routes)), lifespan="off",
                                log_config=None, access_log=False, log_level=logging.WARNING,
                                timeout_graceful_shutdown=_GRACE_S, server_header=False)
        server = _Server(config)

        async def serve() -> None:
            # Shielded: a stop sets should_exit and lets uvicorn close its connections.
            with anyio.CancelScope(shield=True):
                await server.serve([self._socket])

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                # Ready now: the socket already listens, so a request made before uvicorn
                # accepts waits in the backlog rather than being refused.
                log.info("http_ready", url=self.url)
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    server.should_exit = True
        finally:
            self._socket.close()
