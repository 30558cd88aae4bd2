"""The chaos harness: real ``warden up`` processes killed with SIGKILL, checked from outside.

Shared by ``tests/chaos/`` and ``bench/chaos.py`` (which puts the repository root on
``sys.path``). Everything is observed the way an operator would observe it: processes by
pid and ``/proc``, the journal through a read-only ``sqlite3`` connection, the ledger file
line by line. Of warden itself only ``bus/`` is used: its client publishes the tasks, as
any NATS client would, and its lookup finds the ``nats-server`` binary.

The invariants (``check_invariants``), after the last daemon has finished every run:

- ``PRAGMA integrity_check`` answers ``ok``;
- the journal holds exactly the runs that were submitted, no others;
- every run reached a terminal status exactly once: one ``events`` row with
  ``kind='status'`` and a terminal status, which is the run's last status event and
  agrees with ``runs.status``;
- every run ``succeeded`` (unless the caller allows otherwise);
- the ledger has no torn line, no duplicate idempotency key, no line of a run that was
  not submitted, and exactly three lines per succeeded run (at most three for the others).

Waiting is polling with a deadline. The only pauses are the random kill delays and
outages, which are the point of chaos; they are drawn from a seeded ``random.Random`` so a
failure can be replayed with the seed that is printed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType

import anyio
from warden.bus.connection import open_bus
from warden.bus.credentials import Credentials
from warden.bus.embedded import is_alive, nats_server_binary
from warden.bus.errors import BusError

REPO_ROOT = Path(__file__).resolve().parents[2]

TERMINAL = frozenset({
    "succeeded", "degraded", "budget_exhausted", "failed", "rejected", "cancelled",
    "needs_human",
})
CRASH_POINTS = ("tool_acted", "intake_committed", "intake_acked", "model_replied")
"""The core's named crash points (``config/crashpoints.py``), in the order of a run."""
LEDGER_LINES_PER_RUN = 3
"""The ``ledger`` scenario: three steps, one ``ledger_append`` each."""

JOURNAL_FILE = "journal.sqlite"
LEDGER_FILE = "ledger.txt"
DAEMON_FILE = "daemon.json"
NATS_PID_FILE = "nats-server.pid"

_POLL = 0.05
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


class ChaosError(AssertionError):
    """The system under chaos did something a test must fail on (the message says what)."""


def chaos_seed() -> int:
    """The seed of this chaos: ``CHAOS_SEED`` from the environment, else a fresh one."""
    given = os.environ.get("CHAOS_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms until it holds; ``ChaosError`` naming ``what`` if it
    does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ChaosError(f"{what}: not within {timeout:g}s")
        time.sleep(_POLL)


def daemon_env(
    *, latency_ms: float, crash_at: str | None = None, settings: Mapping[str, str] = {}
) -> dict[str, str]:
    """The environment of a chaos daemon: ours without any ``WARDEN_*`` setting or API key,
    the scripted model at ``latency_ms``, ``WARDEN_CRASH_AT`` when given, and ``settings``
    (more ``WARDEN_*`` variables)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WARDEN_") and k != "ANTHROPIC_API_KEY"}
    env["WARDEN_MODELS__PROVIDER"] = "scripted"
    env["WARDEN_SCRIPTED_LATENCY_MS"] = f"{latency_ms:g}"
    env["WARDEN_HTTP_PORT"] = "0"  # beside other daemons (tests/conftest.py)
    if crash_at:
        env["WARDEN_CRASH_AT"] = crash_at
    env.update(settings)
    return env


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- processes --------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` giving the child ``PR_SET_PDEATHSIG=SIGKILL``: a chaos
    process never outlives the test or script that started it, even one killed with -9."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved before the fork: between fork and exec the child may only make the call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec


class DaemonProcess:
    """One ``warden up --data-dir D`` process, its output in ``log_path``."""

    def __init__(
        self, data_dir: Path, log_path: Path, *, latency_ms: float,
        crash_at: str | None = None, nats_url: str | None = None,
        settings: Mapping[str, str] = {},
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.crash_at = crash_at
        self.url = ""
        self.client: Credentials | None = None
        """How a client connects to this daemon (``daemon.json``); ``None``: anonymously."""
        self.server_pid: int | None = None
        command = [sys.executable, "-m", "warden", "up", "--data-dir", str(data_dir)]
        if nats_url:
            command += ["--nats", nats_url]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = daemon_env(latency_ms=latency_ms, crash_at=crash_at, settings=settings)
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent(),
            )
        self.pid = self.proc.pid

    def __repr__(self) -> str:
        return f"<daemon pid {self.pid} crash_at={self.crash_at!r}>"

    def _record(self) -> dict[str, object] | None:
        try:
            record = json.loads((self.data_dir / DAEMON_FILE).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("pid") == self.pid else None

    def wait_ready(self, timeout: float = _READY_TIMEOUT) -> bool:
        """Block until ``daemon.json`` names this process (``True``) or it exits first
        (``False``). Raises ``ChaosError`` with the log tail if neither within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (record := self._record()) is None:
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise ChaosError(f"{self!r} not ready within {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.01)
        self.url = str(record["url"])
        seed = dict(record.get("credentials") or {}).get("client")
        if seed:
            self.client = Credentials(nkey_seed=Path(seed), inbox_prefix="_INBOX_client")
        with contextlib.suppress(OSError, ValueError):
            self.server_pid = int((self.data_dir / NATS_PID_FILE).read_text().strip())
        return True

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status once the process has exited, ``None`` if it still runs after
        ``timeout`` seconds. Negative: killed by that signal."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int:
        """SIGKILL (if still running) and reap; the exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        return self.proc.wait()

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                return self.kill()
        return self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)


class NatsServerProcess:
    """A nats-server with JetStream that the chaos owns (not a daemon's embedded one):
    loopback only, its store in ``root/store``; restartable on the same port and store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store_dir = root / "store"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self._starts = 0

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start it (the first time on a port of the server's choosing, then on the same
        one) and block until it accepts TCP connections."""
        for stale in self.root.glob("nats-server_*.ports"):
            stale.unlink()
        command = [
            str(nats_server_binary()), "--jetstream", "--addr", "127.0.0.1",
            "--port", str(self.port) if self.port else "-1",
            "--store_dir", str(self.store_dir), "--ports_file_dir", str(self.root),
        ]  # fmt: skip
        self._starts += 1
        with (self.root / f"nats-server-{self._starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(command, cwd=self.root, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent())
        self.pids.append(self.proc.pid)
        wait_until(self._accepting, timeout, f"nats-server pid {self.proc.pid} accepting")

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ChaosError(f"nats-server exited with {self.proc.returncode}:\n"
                             f"{_tail(self.root / f'nats-server-{self._starts}.log')}")
        if self.port is None:
            for path in self.root.glob(f"*_{self.proc.pid}.ports"):
                with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                    self.port = int(json.loads(path.read_text())["nats"][0].rsplit(":", 1)[1])
            if self.port is None:
                return False
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, a bounded wait, then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    """Every process one chaos starts, under one private directory ``root``.

    ``data_dir`` is the daemons' data directory, ``root/logs`` their output. On exit,
    whatever is still alive is SIGKILLed by pid: the processes it started, and any
    process whose command line names ``root`` (an embedded nats-server it never saw the
    pid of, say) since only this chaos starts processes there.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.data_dir = self.root / "data"
        self.log_dir = self.root / "logs"
        self.daemons: list[DaemonProcess] = []
        self.nats_servers: list[NatsServerProcess] = []

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start_daemon(
        self, *, latency_ms: float, crash_at: str | None = None, nats_url: str | None = None,
        settings: Mapping[str, str] = {},
    ) -> DaemonProcess:
        """Spawn ``warden up`` (returns at once; call ``wait_ready``). ``settings``: more
        ``WARDEN_*`` environment variables."""
        log_path = self.log_dir / f"daemon-{len(self.daemons):04d}.log"
        daemon = DaemonProcess(self.data_dir, log_path, latency_ms=latency_ms,
                               crash_at=crash_at, nats_url=nats_url, settings=settings)
        self.daemons.append(daemon)
        return daemon

    def start_nats(self) -> NatsServerProcess:
        """Start an external nats-server (see ``NatsServerProcess``)."""
        server = NatsServerProcess(self.root / f"nats-{len(self.nats_servers)}")
        self.nats_servers.append(server)
        server.start()
        return server

    def _known_pids(self) -> set[int]:
        pids = {d.pid for d in self.daemons}
        pids |= {d.server_pid for d in self.daemons if d.server_pid is not None}
        pids |= {pid for s in self.nats_servers for pid in s.pids}
        return pids

    def live_processes(self) -> dict[int, str]:
        """Live (not zombie) processes started by this chaos: pid -> command line."""
        live: dict[int, str] = {}
        candidates = set(self._known_pids())
        prefix = os.fsencode(self.root)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a == prefix or a.startswith(prefix + b"/") for a in argv):
                candidates.add(int(entry.name))
        for pid in candidates:
            if pid != os.getpid() and is_alive(pid):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                live[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        return live

    def wait_no_processes(self, timeout: float = 10.0) -> dict[int, str]:
        """Poll until none of this chaos's processes is alive (an embedded server dies a
        moment after its daemon); what is still alive at the deadline."""
        deadline = time.monotonic() + timeout
        while (live := self.live_processes()) and time.monotonic() < deadline:
            time.sleep(_POLL)
        return live

    def close(self) -> None:
        """SIGKILL, by pid, every process of this chaos still alive; reap our children."""
        for daemon in self.daemons:
            if daemon.running():
                daemon.kill()
        for server in self.nats_servers:
            server.kill()
        for pid in self.live_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- submitting -------------------------------------------------------------------------


def publish_tasks(
    url: str, run_ids: Sequence[str], *, scenario: str = "ledger", timeout: float = 3.0,
    credentials: Credentials | None = None,
) -> list[str]:
    """Publish one ``scenario`` task per id on ``warden.tasks`` (``Nats-Msg-Id`` = the id),
    each waiting for the stream's ack. Blocks. Returns the ids acked, in order; stops at
    the first failure (a daemon that died takes its embedded server with it), so the
    rest are the caller's to publish again, with the same ids, to the next daemon."""

    async def publish() -> list[str]:
        acked: list[str] = []
        try:
            async with open_bus(url, name="chaos", connect_timeout=timeout,
                                credentials=credentials) as bus:
                for run_id in run_ids:
                    data = json.dumps({"id": run_id, "text": f"chaos entry of {run_id}",
                                       "scenario": scenario}).encode()
                    await bus.publish_task(data, msg_id=run_id, timeout=timeout)
                    acked.append(run_id)
        except BusError:
            pass
        return acked

    return anyio.run(publish)


def publish_all(
    url: str, run_ids: Sequence[str], *, timeout: float = 15.0,
    credentials: Credentials | None = None,
) -> None:
    """``publish_tasks`` again for the rest until every id is acked (a server just
    restarted may take a moment to serve its streams). Blocks; ``ChaosError`` with the
    ids left if that takes longer than ``timeout`` seconds."""
    rest = list(run_ids)
    deadline = time.monotonic() + timeout
    while rest:
        del rest[:len(publish_tasks(url, rest, credentials=credentials))]
        if rest and time.monotonic() > deadline:
            raise ChaosError(f"{len(rest)} tasks not acked within {timeout:g}s: {rest[:5]}")


# -- reading the journal and the ledger -------------------------------------------------


@dataclass(frozen=True)
class JournalSnapshot:
    """What the journal says: each run's status, and its status events in order."""

    statuses: dict[str, str]
    status_events: dict[str, list[str]]

    def unfinished(self, run_ids: Iterable[str]) -> list[str]:
        """The ids among ``run_ids`` without a terminal status (or no run at all)."""
        return [r for r in run_ids if self.statuses.get(r) not in TERMINAL]


def _open_journal(data_dir: Path) -> sqlite3.Connection:
    path = data_dir / JOURNAL_FILE
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)


def read_journal(data_dir: Path) -> JournalSnapshot:
    """A consistent snapshot of the journal (one read transaction). Empty if there is no
    journal yet. Raises ``sqlite3.Error`` if it cannot be read right now."""
    if not (data_dir / JOURNAL_FILE).exists():
        return JournalSnapshot({}, {})
    con = _open_journal(data_dir)
    try:
        con.execute("BEGIN")
        try:
            statuses = dict(con.execute("SELECT id, status FROM runs").fetchall())
            rows = con.execute(
                "SELECT run_id, status FROM events WHERE kind = 'status' ORDER BY seq"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created but not yet migrated
                return JournalSnapshot({}, {})
            raise
    finally:
        con.close()
    events: dict[str, list[str]] = {}
    for run_id, status in rows:
        events.setdefault(run_id, []).append(status)
    return JournalSnapshot(statuses, events)


def try_read_journal(data_dir: Path) -> JournalSnapshot | None:
    """``read_journal``, or ``None`` while the file cannot be read (busy, being created)."""
    try:
        return read_journal(data_dir)
    except sqlite3.Error:
        return None


def integrity_check(data_dir: Path) -> str:
    """``PRAGMA integrity_check`` of the journal: ``ok`` or the problems it lists."""
    con = _open_journal(data_dir)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()
    return "\n".join(str(r[0]) for r in rows)


@dataclass(frozen=True)
class LedgerLine:
    key: str
    run_id: str
    text: str


def read_ledger(data_dir: Path) -> tuple[list[LedgerLine], list[str]]:
    """The ledger's lines, and the problems of those that are not whole lines
    (``<key> <run id> <text>`` ending in a newline)."""
    try:
        raw = (data_dir / LEDGER_FILE).read_bytes()
    except FileNotFoundError:
        return [], []
    chunks = raw.split(b"\n")
    problems = [f"torn last line {chunks[-1][:120]!r} (no newline)"] if chunks[-1] else []
    lines: list[LedgerLine] = []
    for number, chunk in enumerate(chunks[:-1], start=1):
        parts = chunk.decode(errors="replace").split(" ", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            problems.append(f"malformed ledger line {number}: {chunk[:120]!r}")
            continue
        lines.append(LedgerLine(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return lines, problems


@dataclass
class Report:
    """The invariants' verdict: figures, and every violation found (none: ``ok``)."""

    runs: int = 0
    succeeded: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    ledger_lines: int = 0
    duplicate_keys: int = 0
    integrity: str = ""
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def explain(self, limit: int = 40) -> str:
        shown = self.violations[:limit]
        more = len(self.violations) - len(shown)
        return "\n".join(shown + ([f"... and {more} more"] if more > 0 else []))


def check_invariants(
    data_dir: Path, run_ids: Iterable[str], *, all_succeeded: bool = True
) -> Report:
    """Check every invariant of the module docstring; meant for a stopped daemon."""
    expected = set(run_ids)
    report = Report(runs=len(expected))
    v = report.violations
    report.integrity = integrity_check(data_dir)
    if report.integrity != "ok":
        v.append(f"PRAGMA integrity_check: {report.integrity}")
    journal = read_journal(data_dir)
    report.statuses = dict(Counter(journal.statuses.get(r, "<missing>") for r in expected))
    report.succeeded = report.statuses.get("succeeded", 0)
    unexpected = sorted(set(journal.statuses) - expected)
    if unexpected:
        v.append(f"{len(unexpected)} runs in the journal were never submitted: {unexpected[:10]}")
    for run_id in sorted(expected):
        status = journal.statuses.get(run_id)
        events = journal.status_events.get(run_id, [])
        terminal = [s for s in events if s in TERMINAL]
        if status is None:
            v.append(f"run {run_id!r} is not in the journal")
            continue
        if len(terminal) != 1:
            v.append(f"run {run_id!r} reached a terminal status {len(terminal)} times: {events}")
        elif events[-1] != terminal[0]:
            v.append(f"run {run_id!r} moved on after its terminal status: {events}")
        if terminal and terminal[-1] != status:
            v.append(f"run {run_id!r} is {status!r} but its last terminal event is "
                     f"{terminal[-1]!r}")
        if all_succeeded and status != "succeeded":
            v.append(f"run {run_id!r} ended {status!r}, not 'succeeded': {events}")

    lines, problems = read_ledger(data_dir)
    v.extend(problems)
    report.ledger_lines = len(lines)
    keys = Counter(line.key for line in lines)
    duplicates = {k: n for k, n in keys.items() if n > 1}
    report.duplicate_keys = len(duplicates)
    if duplicates:
        v.append(f"{len(duplicates)} duplicate ledger keys: {sorted(duplicates.items())[:10]}")
    per_run = Counter(line.run_id for line in lines)
    strangers = sorted(set(per_run) - expected)
    if strangers:
        v.append(f"ledger lines of runs never submitted: {strangers[:10]}")
    for run_id in sorted(expected):
        count = per_run.get(run_id, 0)
        if journal.statuses.get(run_id) == "succeeded" and count != LEDGER_LINES_PER_RUN:
            v.append(f"succeeded run {run_id!r} has {count} ledger lines, "
                     f"not {LEDGER_LINES_PER_RUN}")
        elif count > LEDGER_LINES_PER_RUN:
            v.append(f"run {run_id!r} has {count} ledger lines, more than "
                     f"{LEDGER_LINES_PER_RUN}")
    return report


def wait_for_terminal(
    data_dir: Path, run_ids: Sequence[str], *, timeout: float,
    daemon: DaemonProcess | None = None,
) -> JournalSnapshot:
    """Poll the journal until every run in ``run_ids`` has a terminal status. Raises
    ``ChaosError`` (with the statuses and the daemon's log tail) at the deadline, or as
    soon as ``daemon`` exits."""
    deadline = time.monotonic() + timeout
    last: JournalSnapshot | None = None
    while True:
        snapshot = try_read_journal(data_dir)
        if snapshot is not None:
            last = snapshot
            if not snapshot.unfinished(run_ids):
                return snapshot
        exited = daemon is not None and not daemon.running()
        if exited or time.monotonic() > deadline:
            left = last.unfinished(run_ids) if last is not None else list(run_ids)
            statuses = Counter(last.statuses.get(r, "<missing>") for r in left) if last else {}
            why = (f"{daemon!r} exited with {daemon.proc.returncode}" if exited and daemon
                   else f"not within {timeout:g}s")
            tail = f"\n{daemon!r} log:\n{daemon.log_tail()}" if daemon is not None else ""
            raise ChaosError(f"{len(left)} of {len(run_ids)} runs unfinished ({why}): "
                             f"{dict(statuses)}, e.g. {left[:5]}{tail}")
        time.sleep(_POLL)


# -- the kill loop ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosPlan:
    """How hard to shake: ``kills`` daemon deaths while ``run_ids`` go through.

    ``first_wave`` runs are submitted to the first daemon (never killed while starting),
    the rest spread evenly over the later ones, so work is always in flight. Each daemon
    dies ``min_delay``-``max_delay`` seconds after its wave is in, by SIGKILL from outside;
    a ``startup_kill_share`` of them is killed instead at a random moment of starting and
    resuming (before or after ``daemon.json``), and a ``crash_point_share`` is started with
    ``WARDEN_CRASH_AT`` at a random point and pass (killed from outside if it has not
    crashed by its deadline).
    """

    kills: int
    run_ids: tuple[str, ...]
    first_wave: int
    latency_ms: float = 100.0
    min_delay: float = 0.2
    max_delay: float = 1.5
    startup_kill_share: float = 0.1
    crash_point_share: float = 0.0
    finish_timeout: float = 60.0


@dataclass
class KillRecord:
    cycle: int
    at_s: float
    """Seconds since the chaos began."""
    how: str
    """``sigkill`` (from outside, running), ``sigkill_starting`` (from outside, while
    starting or resuming), or ``crash_point`` (it killed itself)."""
    crash_at: str | None
    after_s: float
    in_flight: int
    """Runs submitted and not terminal just before the kill (-1: journal unreadable)."""
    submitted: int
    finished: int


@dataclass
class ChaosOutcome:
    seed: int
    kills: list[KillRecord]
    report: Report
    recovery_s: float
    """From the last daemon's start to every run terminal."""
    wall_s: float
    final_exit: int
    """Exit status of the last daemon, stopped with SIGTERM (0 expected)."""
    leftovers: dict[int, str]
    """Processes of this chaos alive after the last daemon stopped (none expected)."""

    @property
    def ok(self) -> bool:
        return self.report.ok and self.final_exit == 0 and not self.leftovers

    def figures(self) -> dict[str, object]:
        in_flight = [k.in_flight for k in self.kills if k.in_flight >= 0]
        return {
            "seed": self.seed,
            "kills": len(self.kills),
            "kills_by_how": dict(Counter(k.how for k in self.kills)),
            "kills_with_runs_in_flight": sum(1 for k in self.kills if k.in_flight > 0),
            "mean_runs_in_flight_at_kill": round(sum(in_flight) / len(in_flight), 1)
            if in_flight else 0,
            "runs": self.report.runs,
            "succeeded": self.report.succeeded,
            "statuses": self.report.statuses,
            "ledger_lines": self.report.ledger_lines,
            "duplicate_keys": self.report.duplicate_keys,
            "integrity": self.report.integrity,
            "violations": len(self.report.violations),
            "final_exit": self.final_exit,
            "leftover_processes": len(self.leftovers),
            "recovery_s": round(self.recovery_s, 2),
            "wall_s": round(self.wall_s, 2),
            "ok": self.ok,
        }

    def explain(self) -> str:
        parts = [f"chaos seed {self.seed} (rerun with CHAOS_SEED={self.seed})"]
        if self.report.violations:
            parts.append(self.report.explain())
        if self.final_exit != 0:
            parts.append(f"the last daemon exited with {self.final_exit} on SIGTERM")
        if self.leftovers:
            parts.append(f"processes left alive: {self.leftovers}")
        return "\n".join(parts)


def _in_flight(data_dir: Path, submitted: Sequence[str]) -> tuple[int, int]:
    snapshot = try_read_journal(data_dir)
    if snapshot is None:
        return -1, -1
    left = len(snapshot.unfinished(submitted))
    return left, len(submitted) - left


def run_chaos(
    cluster: Cluster, plan: ChaosPlan, *, seed: int,
    progress: Callable[[KillRecord], None] | None = None,
) -> ChaosOutcome:
    """Shake ``cluster`` according to ``plan``, then let one last daemon finish every run,
    stop it with SIGTERM and check the invariants. Blocks; raises ``ChaosError`` if a
    daemon does not start or the runs do not finish within ``plan.finish_timeout``."""
    rng = random.Random(seed)
    started = time.monotonic()
    pending = list(plan.run_ids)
    submitted: list[str] = []
    kills: list[KillRecord] = []

    def submit(daemon: DaemonProcess, count: int) -> None:
        wave = pending[:count]
        if wave:
            acked = publish_tasks(daemon.url, wave, credentials=daemon.client)
            submitted.extend(acked)
            del pending[:len(acked)]

    for cycle in range(plan.kills):
        crash_at = None
        if rng.random() < plan.crash_point_share:
            point = rng.choice(CRASH_POINTS)
            # A daemon takes in only its wave, but makes many model and tool calls.
            crash_at = f"{point}:{rng.randint(1, 3 if point.startswith('intake') else 12)}"
        daemon = cluster.start_daemon(latency_ms=plan.latency_ms, crash_at=crash_at)
        spawned = time.monotonic()
        how = "sigkill"
        if cycle > 0 and rng.random() < plan.startup_kill_share:
            how = "sigkill_starting"
            # The random moment is measured from the spawn: the daemon may be importing,
            # starting its server, opening the journal or resuming runs.
            exited = daemon.wait_exit(rng.uniform(0.0, 1.5))
        else:
            if daemon.wait_ready():
                remaining = plan.kills - cycle
                # Rounded, not ceiled: the waves then last until the last daemon.
                count = (plan.first_wave if cycle == 0
                         else math.floor(len(pending) / remaining + 0.5))
                submit(daemon, count)
            exited = daemon.wait_exit(rng.uniform(plan.min_delay, plan.max_delay))
        in_flight, finished = _in_flight(cluster.data_dir, submitted)
        if exited is None:
            daemon.kill()
        elif exited == -signal.SIGKILL and crash_at:
            how = "crash_point"
        else:
            raise ChaosError(f"{daemon!r} exited by itself with {exited}:\n{daemon.log_tail()}")
        now = time.monotonic()
        record = KillRecord(cycle=cycle, at_s=round(now - started, 2), how=how,
                            crash_at=crash_at, after_s=round(now - spawned, 3),
                            in_flight=in_flight, submitted=len(submitted), finished=finished)
        kills.append(record)
        if progress is not None:
            progress(record)

    recovery_started = time.monotonic()
    daemon = cluster.start_daemon(latency_ms=plan.latency_ms)
    if not daemon.wait_ready():
        raise ChaosError(f"the last daemon exited with {daemon.proc.returncode} while "
                         f"starting:\n{daemon.log_tail()}")
    while pending:
        before = len(pending)
        submit(daemon, len(pending))
        if len(pending) == before:
            raise ChaosError(f"the last daemon took none of {before} tasks:\n"
                             f"{daemon.log_tail()}")
    wait_for_terminal(cluster.data_dir, plan.run_ids, timeout=plan.finish_timeout, daemon=daemon)
    recovery_s = time.monotonic() - recovery_started
    final_exit = daemon.stop()
    report = check_invariants(cluster.data_dir, plan.run_ids)
    leftovers = cluster.wait_no_processes()
    return ChaosOutcome(seed=seed, kills=kills, report=report, recovery_s=recovery_s,
                        wall_s=time.monotonic() - started, final_exit=final_exit,
                        leftovers=leftovers)


def kill_line(record: KillRecord) -> str:
    """One progress line per kill, as JSON."""
    return json.dumps({"kill": record.cycle + 1, **{k: v for k, v in asdict(record).items()
                                                    if k != "cycle"}})
