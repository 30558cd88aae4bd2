"""The embedded nats-server: starts, serves, stops, cleans up after crashes."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs
from warden.bus.embedded import (
    LOG_FILE,
    PID_FILE,
    is_alive,
    nats_server_binary,
    open_embedded_server,
)
from warden.bus.errors import EmbeddedServerError

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _wait_for_exit(pid: int, within: float) -> bool:
    """Block until ``pid`` has exited (zombies count), at most ``within`` seconds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return _poll(lambda: not is_alive(pid), within)
    try:
        # A pidfd becomes readable when the process exits: an event, not a sleep.
        readable, _, _ = select.select([fd], [], [], within)
        return bool(readable) or not is_alive(pid)
    finally:
        os.close(fd)


def _poll(predicate: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def _read_info_line(port: int) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        return await stream.receive()


@pytest.mark.anyio
async def test_server_accepts_connections_while_open_and_is_stopped_on_exit(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    async with open_embedded_server(data_dir) as server:
        assert server.url == f"nats://127.0.0.1:{server.port}"
        assert server.port > 0
        assert is_alive(server.pid)
        assert (data_dir / PID_FILE).read_text().strip() == str(server.pid)
        assert (await _read_info_line(server.port)).startswith(b"INFO ")
    assert not is_alive(server.pid)
    assert not (data_dir / PID_FILE).exists()
    with pytest.raises(OSError):
        await anyio.connect_tcp("127.0.0.1", server.port)


@pytest.mark.anyio
async def test_store_and_log_live_under_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with open_embedded_server(data_dir) as server:
        assert server.store_dir == data_dir.resolve() / "nats"
        assert (server.store_dir / "jetstream").is_dir()
        assert server.log_path == data_dir.resolve() / LOG_FILE
    assert "Server is ready" in server.log_path.read_text()


@pytest.mark.anyio
async def test_the_server_listens_on_loopback_only(tmp_path: Path) -> None:
    async with open_embedded_server(tmp_path) as server:
        assert f"Listening for client connections on 127.0.0.1:{server.port}" in (
            server.log_path.read_text()
        )


@pytest.mark.anyio
async def test_two_servers_get_distinct_free_ports(tmp_path: Path) -> None:
    async with (
        open_embedded_server(tmp_path / "a") as first,
        open_embedded_server(tmp_path / "b") as second,
    ):
        assert first.port != second.port


@pytest.mark.anyio
async def test_server_is_stopped_when_the_owner_is_cancelled(tmp_path: Path) -> None:
    pids: list[int] = []
    with anyio.CancelScope() as scope:
        async with open_embedded_server(tmp_path) as server:
            pids.append(server.pid)
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert pids and not is_alive(pids[0])


@pytest.mark.anyio
async def test_a_server_that_cannot_bind_raises_with_its_log_tail(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EmbeddedServerError) as caught:
            async with open_embedded_server(tmp_path, port=port):
                pytest.fail("started on a port that is in use")
    assert "before it was ready" in str(caught.value)
    assert "address already in use" in caught.value.log_tail.lower()
    assert not (tmp_path / PID_FILE).exists()


def _start_stray_server(store_dir: Path) -> subprocess.Popen[bytes]:
    """A nats-server not started by open_embedded_server, serving ``store_dir``."""
    store_dir.mkdir(parents=True)
    return subprocess.Popen(
        [str(nats_server_binary()), "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(store_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_stray_server(stray: subprocess.Popen[bytes]) -> None:
    if stray.poll() is None:
        stray.kill()
    stray.wait()


@pytest.mark.anyio
async def test_a_stale_server_from_a_killed_daemon_is_killed_and_its_pid_file_replaced(
    tmp_path: Path,
) -> None:
    # What a SIGKILLed daemon leaves behind: its server still running, its pid file.
    stale = _start_stray_server(tmp_path / "nats")
    try:
        (tmp_path / PID_FILE).write_text(f"{stale.pid}\n")
        with capture_logs() as logs:
            async with open_embedded_server(tmp_path) as server:
                assert stale.wait(timeout=5) == -signal.SIGKILL
                assert server.pid != stale.pid
                assert (tmp_path / PID_FILE).read_text().strip() == str(server.pid)
        cleaned = [e for e in logs if e["event"] == "stale_server_cleaned"]
        assert cleaned == [
            {
                "event": "stale_server_cleaned",
                "pid": stale.pid,
                "killed": True,
                "data_dir": str(server.store_dir.parent),
                "log_level": "warning",
            }
        ]
    finally:
        _stop_stray_server(stale)


@pytest.mark.anyio
async def test_a_nats_server_serving_another_store_is_not_killed(tmp_path: Path) -> None:
    # A recycled pid may belong to someone else's nats-server: only ours is stale.
    other = _start_stray_server(tmp_path / "elsewhere")
    try:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / PID_FILE).write_text(f"{other.pid}\n")
        with capture_logs() as logs:
            async with open_embedded_server(tmp_path / "data"):
                assert other.poll() is None
        cleaned = [e for e in logs if e["event"] == "stale_server_cleaned"]
        assert [(e["pid"], e["killed"]) for e in cleaned] == [(other.pid, False)]
    finally:
        _stop_stray_server(other)


@pytest.mark.anyio
async def test_a_stale_pid_file_naming_another_process_is_removed_without_killing_it(
    tmp_path: Path,
) -> None:
    # Our own pid: alive, but not a nats-server. Killing it would end this test run.
    (tmp_path / PID_FILE).write_text(f"{os.getpid()}\n")
    with capture_logs() as logs:
        async with open_embedded_server(tmp_path) as server:
            assert (tmp_path / PID_FILE).read_text().strip() == str(server.pid)
    cleaned = [e for e in logs if e["event"] == "stale_server_cleaned"]
    assert [(e["pid"], e["killed"]) for e in cleaned] == [(os.getpid(), False)]


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import anyio

    from warden.bus.embedded import open_embedded_server


    async def main() -> None:
        async with open_embedded_server(Path(sys.argv[1])) as server:
            print("SERVER_PID", server.pid, flush=True)
            await anyio.sleep_forever()


    anyio.run(main)
    """
)


def _read_server_pid(child: subprocess.Popen[bytes], within: float) -> int:
    # The child's stdout also carries its structlog lines; the pid has a marker.
    assert child.stdout is not None
    deadline = time.monotonic() + within
    while True:
        readable, _, _ = select.select([child.stdout], [], [], deadline - time.monotonic())
        assert readable, f"the child did not report its server within {within:g}s"
        line = child.stdout.readline()
        assert line, f"the child exited with status {child.wait()} before reporting"
        if line.startswith(b"SERVER_PID "):
            return int(line.split()[1])


def test_server_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    server_pid: int | None = None
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        bufsize=0,  # unbuffered, so select() on the pipe never misses a buffered line
        cwd=REPO_ROOT,
        env=env,
    ) as parent:
        try:
            server_pid = _read_server_pid(parent, within=30)
            assert is_alive(server_pid)

            parent.send_signal(signal.SIGKILL)
            assert parent.wait(timeout=10) == -signal.SIGKILL

            assert _wait_for_exit(server_pid, within=10), "nats-server outlived its parent"
        finally:
            if parent.poll() is None:
                parent.kill()
            if server_pid is not None and is_alive(server_pid):
                os.kill(server_pid, signal.SIGKILL)
