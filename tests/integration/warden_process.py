"""A real ``warden up`` process with settings of the test's choosing, and the CLI against it.

``tests/integration/test_cli.py`` runs a daemon on the shipped defaults with the scripted
model; the tests of model failures and checks need their own settings (a fake provider's
URL, small patience, a test script) and, for the Anthropic client, an API key in the
child's environment. Settings go in a TOML file given with ``--config`` (lists, such as
``models.script_files``, cannot be given as ``WARDEN_*`` variables).

``WardenUp.submit_wait`` runs ``warden submit --wait --json`` and, while it waits, reads
the run's status in the journal (read-only): a run the journal has ended while the
command still waits ``event_grace_s`` later means its terminal event was never published,
and fails the test at once rather than after the command's whole ``--timeout``.

``warden_up`` always stops what it started: SIGTERM (a clean shutdown stops the embedded
nats-server), SIGKILL after 10 s, and the nats-server by the pid it wrote, should it
have outlived the daemon.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from warden.supervisor.run import TERMINAL

_SCRUBBED_PREFIXES = ("WARDEN_", "ANTHROPIC_")
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def child_env(api_key: str | None = None) -> dict[str, str]:
    """Our environment without warden's, the SDK's or proxy variables; the key if given."""
    env = {
        name: value for name, value in os.environ.items()
        if not name.startswith(_SCRUBBED_PREFIXES) and name.lower() not in _PROXY_VARIABLES
    }
    if api_key is not None:
        env["ANTHROPIC_API_KEY"] = api_key
    env["WARDEN_HTTP_PORT"] = "0"  # beside other daemons (tests/conftest.py)
    return env


def toml_text(settings: Mapping[str, object]) -> str:
    """TOML for settings given as ``{"section": {"key": value}}`` (and top-level keys).

    Values are strings, numbers, booleans or lists of those: their JSON spelling is also
    their TOML spelling.
    """
    scalars = [f"{key} = {json.dumps(value)}" for key, value in settings.items()
               if not isinstance(value, Mapping)]
    tables = [
        f"[{key}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
        for key, value in settings.items() if isinstance(value, Mapping)
    ]
    return "\n".join(scalars) + "\n\n" + "\n\n".join(tables) + "\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class Submitted:
    """How a ``warden submit --wait --json`` ended."""

    run_id: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class WardenUp:
    """A running ``warden up``: its data dir, its config file, and the CLI against it."""

    def __init__(self, proc: subprocess.Popen[str], data_dir: Path, config: Path,
                 env: dict[str, str]) -> None:
        self.proc = proc
        self.data_dir = data_dir
        self.config = config
        self.env = env

    def cli(self, *args: str, timeout: float = 110.0) -> subprocess.CompletedProcess[str]:
        """``warden ARGS --data-dir ... --config ...``; its output captured, never raises
        on a non-zero exit (``timeout`` is the subprocess's, a safety net)."""
        return subprocess.run(
            [sys.executable, "-m", "warden", *args, "--data-dir", str(self.data_dir),
             "--config", str(self.config)],
            capture_output=True, text=True, timeout=timeout, env=self.env, check=False,
        )

    def journal_status(self, run_id: str) -> str | None:
        """The run's status as the journal has it now (read-only), ``None`` if absent."""
        path = self.data_dir / "journal.sqlite"
        if not path.exists():
            return None
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def submit_wait(
        self, text: str, *args: str, timeout: float, event_grace_s: float = 5.0
    ) -> Submitted:
        """``warden submit TEXT --wait --json --timeout TIMEOUT ARGS``, followed to its end.

        Raises ``AssertionError`` if the journal ends the run and the command is still
        waiting ``event_grace_s`` later (it is killed then).
        """
        run_id = f"t-{secrets.token_hex(6)}"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "warden", "submit", text, "--wait", "--json", "--id", run_id,
             "--timeout", f"{timeout:g}", *args, "--data-dir", str(self.data_dir),
             "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
        )
        ended_in_journal: float | None = None
        with proc:
            while True:
                try:
                    stdout, stderr = proc.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if ended_in_journal is None and self.journal_status(run_id) in TERMINAL:
                    ended_in_journal = now
                if ended_in_journal is not None and now - ended_in_journal > event_grace_s:
                    proc.kill()
                    proc.communicate()
                    raise AssertionError(
                        f"run {run_id!r} is {self.journal_status(run_id)!r} in the journal "
                        f"after {ended_in_journal - started:.1f}s, but `warden submit --wait` "
                        f"was still waiting for its terminal event {event_grace_s:g}s later"
                    )
        return Submitted(run_id=run_id, returncode=proc.returncode, stdout=stdout,
                         stderr=stderr, seconds=time.monotonic() - started)


@contextmanager
def warden_up(
    tmp_path: Path, settings: Mapping[str, object], *, api_key: str | None = None,
    ready_within: float = 30.0, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
) -> Iterator[WardenUp]:
    """Start ``warden up`` with ``settings`` (and ``args``; ``env`` added to its
    environment); wait until it serves (``daemon.json`` names its pid); stop it, and its
    nats-server, on the way out, whatever happened."""
    data_dir = tmp_path / "data"
    config = tmp_path / "warden.toml"
    config.write_text(toml_text(settings), encoding="utf-8")
    log = (tmp_path / "warden-up.log").open("w", encoding="utf-8")
    env = {**child_env(api_key), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "warden", "up", "--data-dir", str(data_dir),
         "--config", str(config), *args],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + ready_within
        while not _serving(data_dir, proc.pid):
            if proc.poll() is not None:
                raise AssertionError(
                    f"warden up exited {proc.returncode}:\n"
                    + (tmp_path / "warden-up.log").read_text(encoding="utf-8")
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"warden up not serving within {ready_within:g}s")
            time.sleep(0.05)
        yield WardenUp(proc, data_dir, config, env)
    finally:
        server_pid = _nats_pid(data_dir)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if server_pid is not None and _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)
        log.close()


def _serving(data_dir: Path, pid: int) -> bool:
    try:
        record = json.loads((data_dir / "daemon.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(record.get("pid") == pid)


def _nats_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "nats-server.pid").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
