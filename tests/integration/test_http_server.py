"""The daemon's HTTP server (supervisor/web.py): served while the daemon runs, on loopback,
a port in use refused with an error naming it, and closed with the daemon."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx2
import pytest
from warden.supervisor.daemon import open_daemon, read_daemon_file
from warden.supervisor.errors import DaemonError

from tests.integration.harness import make_settings

pytestmark = pytest.mark.anyio


async def test_healthz_answers_while_the_daemon_runs_and_the_port_closes_after(
        tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with open_daemon(settings) as daemon:
        url = daemon.http_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        info = read_daemon_file(daemon.data_dir)
        assert info is not None and info.http == url
        async with httpx2.AsyncClient() as client:
            reply = await client.get(f"{url}/healthz")
        assert reply.status_code == 200
        assert json.loads(reply.content)["daemon_id"] == daemon.daemon_id
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


async def test_a_port_in_use_is_an_error_naming_http_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        settings = make_settings(tmp_path, http__port=port)
        with pytest.raises(DaemonError, match=r"http\.port: 127\.0\.0\.1:\d+ is in use"):
            async with open_daemon(settings):
                pass


async def test_http_can_be_switched_off(tmp_path: Path) -> None:
    async with open_daemon(make_settings(tmp_path, http__enabled=False)) as daemon:
        assert daemon.http_url is None
