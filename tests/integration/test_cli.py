"""The `warden` command line against a real daemon process (real nats-server, real SQLite)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WARDEN_") and k != "ANTHROPIC_API_KEY"}
    env["WARDEN_MODELS__PROVIDER"] = "scripted"
    env["WARDEN_HTTP_PORT"] = "0"  # beside other daemons (tests/conftest.py)
    return env


def warden(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warden", *args], capture_output=True, text=True,
        timeout=timeout, env=_env(), check=False,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


class Daemon:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warden", "up", "--data-dir", str(data_dir)],
            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        _wait(lambda: self._ready() or self.proc.poll() is not None, 30)
        assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""
        self.server_pid = int((data_dir / "nats-server.pid").read_text().strip())

    def _ready(self) -> bool:
        try:
            record = json.loads((self.data_dir / "daemon.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(record.get("pid") == self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if _alive(self.server_pid):
            os.kill(self.server_pid, signal.SIGKILL)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "data")
    try:
        yield d
    finally:
        d.stop()


def test_help_explains_the_commands() -> None:
    result = warden("--help")
    assert result.returncode == 0
    for command in ("up", "submit", "runs", "show", "demo", "worker"):
        assert command in result.stdout


def test_client_without_a_daemon_exits_2_and_says_how_to_start_one(tmp_path: Path) -> None:
    result = warden("runs", "--data-dir", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert "no daemon is running" in result.stderr
    assert "warden up" in result.stderr


def test_submit_wait_json_shows_a_finished_run_and_runs_lists_it(daemon: Daemon) -> None:
    data = str(daemon.data_dir)
    submitted = warden("submit", "Write fizzbuzz, with tests", "--wait", "--json",
                       "--data-dir", data)
    assert submitted.returncode == 0, submitted.stderr
    run = json.loads(submitted.stdout)
    assert run["status"] == "succeeded"
    assert run["cost_usd"] > 0
    listed = warden("runs", "--json", "--data-dir", data)
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [(r["id"], r["status"]) for r in runs] == [(run["id"], "succeeded")]
    assert {"id", "status", "cost_usd"} <= set(runs[0])
    shown = warden("show", run["id"], "--data-dir", data)
    assert shown.returncode == 0 and "succeeded" in shown.stdout


def test_sigterm_shuts_down_within_10s_and_leaves_no_nats_server(daemon: Daemon) -> None:
    assert _alive(daemon.server_pid)
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    assert time.monotonic() - started < 10
    _wait(lambda: not _alive(daemon.server_pid), 5)
    assert not (daemon.data_dir / "daemon.json").exists()


def test_sigkill_leaves_no_nats_server_and_the_next_start_cleans_up(daemon: Daemon) -> None:
    daemon.proc.kill()
    daemon.proc.wait(10)
    _wait(lambda: not _alive(daemon.server_pid), 10)
    assert (daemon.data_dir / "daemon.json").exists()  # stale, left by the killed daemon
    again = Daemon(daemon.data_dir)
    try:
        submitted = warden("submit", "fizzbuzz", "--wait", "--json",
                           "--data-dir", str(daemon.data_dir))
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads(submitted.stdout)["status"] == "succeeded"
    finally:
        again.stop()


def test_garbage_on_the_task_subject_shows_up_in_runs_as_rejected(daemon: Daemon) -> None:
    import anyio
    from warden.bus import subjects
    from warden.bus.connection import open_bus
    from warden.bus.credentials import Credentials

    record = json.loads((daemon.data_dir / "daemon.json").read_text())
    client = Credentials(nkey_seed=Path(record["credentials"]["client"]),
                         inbox_prefix="_INBOX_client")

    async def publish() -> None:
        async with open_bus(record["url"], name="garbage", credentials=client) as bus:
            await bus.publish(subjects.TASKS, b"{not json")

    anyio.run(publish)
    data = str(daemon.data_dir)

    def rejected() -> list[dict[str, object]]:
        listed = warden("runs", "--json", "--data-dir", data)
        return [r for r in json.loads(listed.stdout) if r["status"] == "rejected"]

    _wait(lambda: bool(rejected()), 20)
    assert "malformed" in str(rejected()[0]["error"])
    ok = warden("submit", "slugify", "--wait", "--json", "--data-dir", data)
    assert json.loads(ok.stdout)["status"] == "succeeded"
