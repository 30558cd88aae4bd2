"""Recovery after SIGKILL: how long a restarted daemon takes to get every run going again.

    .venv/bin/python -m bench.recovery --runs 1000 [--latency-ms 2000] [--keep DIR]

Starts a real daemon process (``warden up`` on the triad workload's config, scripted model
with ``--latency-ms`` per call, workers in the daemon) and submits ``--runs`` tasks over
NATS. Once every run is in the journal, ``running``, with at least one model call
recorded, the daemon is SIGKILLed (its embedded nats-server dies with it: parent-death
signal; killed by pid if it lingers), each run's recorded model calls are counted, and the
daemon is started again on the same data directory. Prints one JSON object:

- ``in_flight``: runs unfinished at the kill (all of them unless the latency is too short);
- ``kill_to_ready_s``: from the restart until the new daemon answers ``warden.api.<daemon_id>.ping``
  (it resumes every unfinished run before it answers);
- ``restart_to_all_stepped_s``: from the restart until every run unfinished at the kill
  has recorded a model call more than it had at the kill, or finished (at least one model
  latency L);
- ``restart_to_all_completed_s``: from the restart until every run has ended;
- ``all_completed``: every run ``succeeded`` with exactly 8 model calls and 3 tool calls
  in the journal: exactly once across the kill, nothing lost, nothing repeated;
- ``ok``: all completed and no process left behind.

Progress is polled from the journal (``<data_dir>/journal.sqlite``, read-only) every
0.2 s, each wait with a deadline. Every process started is stopped by pid: the daemon
with SIGTERM (SIGKILL after a deadline), its nats-servers checked by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import psutil
from warden.bus import subjects
from warden.bus.connection import open_bus
from warden.bus.credentials import Credentials
from warden.bus.embedded import PID_FILE, is_alive
from warden.bus.errors import BusError
from warden.bus.wire import TaskSubmission, encoder
from warden.supervisor.daemon import JOURNAL_FILE, read_daemon_file
from warden.supervisor.logs import configure_logging
from warden.supervisor.run import TERMINAL

from bench.warden_triad import SCENARIO, write_config
from bench.workload import GOAL, MODEL_CALLS_PER_TASK, TOOL_CALLS_PER_TASK

REPO_ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.2
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
KILL_WAIT_S = 5.0
PING_TIMEOUT_S = 5.0
DEFAULT_LATENCY_MS = 2000.0  # 1000 runs take ~10 s to admit on 2 cores; a run lasts 8 x L


class RunRow(NamedTuple):
    status: str
    model_calls: int
    tool_calls: int


Snapshot = dict[str, RunRow]

SNAPSHOT_SQL = """
SELECT r.id, r.status, COALESCE(m.calls, 0), COALESCE(t.calls, 0) FROM runs r
LEFT JOIN (SELECT run_id, COUNT(*) AS calls FROM model_calls GROUP BY run_id) m
       ON m.run_id = r.id
LEFT JOIN (SELECT run_id, COUNT(*) AS calls FROM tool_calls GROUP BY run_id) t
       ON t.run_id = r.id
"""


def snapshot(journal: Path) -> Snapshot:
    """Every run's status and recorded model and tool calls, read-only."""
    if not journal.exists():
        return {}
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        return {run_id: RunRow(status, int(m), int(t))
                for run_id, status, m, t in conn.execute(SNAPSHOT_SQL)}
    finally:
        conn.close()


async def poll_until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Call ``check`` every ``POLL_S`` until true; the seconds it took. ``TimeoutError``
    naming ``what`` past ``timeout_s``."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(POLL_S)
    return time.perf_counter() - started


# --- the daemon process -----------------------------------------------------------------


class DaemonProcess:
    """``warden up`` in a child process, its nats-server, and how to stop both by pid."""

    def __init__(self, config: Path, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "warden", "up", "--config", str(config),
                 "--log-level", "error"],
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.url: str | None = None
        self.client: Credentials | None = None
        self.daemon_id: str | None = None
        self.nats_pid: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _written(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with status {self.proc.returncode}:\n"
                               f"{self.log_tail()}")
        info = read_daemon_file(self.data_dir)
        if info is None or info.pid != self.pid:
            return False
        self.url = info.url
        self.client = Credentials(nkey_seed=info.seeds["client"], inbox_prefix="_INBOX_client")
        self.daemon_id = info.daemon_id
        return True

    async def wait_ready(self) -> None:
        """Until ``daemon.json`` names this process and the daemon answers a ping."""
        await poll_until(self._written, READY_TIMEOUT_S, "daemon.json of the new daemon")
        assert self.url is not None and self.daemon_id is not None
        async with open_bus(self.url, name="bench-recovery-ping", credentials=self.client) as bus:
            await bus.request(subjects.api(self.daemon_id, "ping"), b"",
                              timeout=PING_TIMEOUT_S)
        self.nats_pid = _read_pid(self.data_dir / PID_FILE)

    def kill(self) -> None:
        """SIGKILL the daemon; make sure its nats-server is gone too."""
        self.proc.kill()
        self.proc.wait()
        self._end_nats_server()

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._end_nats_server()
        return self.proc.returncode

    def _end_nats_server(self) -> None:
        pid = self.nats_pid
        if pid is None or _wait_dead(pid, KILL_WAIT_S):
            return
        try:
            if psutil.Process(pid).name() == "nats-server":
                os.kill(pid, signal.SIGKILL)
        except (psutil.NoSuchProcess, ProcessLookupError):
            return
        if not _wait_dead(pid, KILL_WAIT_S):
            raise RuntimeError(f"nats-server pid {pid} still alive after SIGKILL")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _wait_dead(pid: int, timeout_s: float) -> bool:
    """Whether ``pid`` is gone within ``timeout_s`` (a zombie counts as gone)."""
    deadline = time.perf_counter() + timeout_s
    while is_alive(pid):
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.01)  # polling a foreign pid: no event to wait on
    return True


# --- the measure ------------------------------------------------------------------------


async def submit(url: str, runs: int, credentials: Credentials | None) -> None:
    """Publish ``runs`` triad tasks (ids t0, t1, ...) and wait for the stream's acks."""
    async with open_bus(url, name="bench-recovery-driver", credentials=credentials) as bus:
        async def one(i: int) -> None:
            task = TaskSubmission(id=f"t{i}", text=GOAL, scenario=SCENARIO)
            await bus.publish_task(encoder.encode(task), msg_id=f"t{i}", timeout=60)

        await asyncio.gather(*(one(i) for i in range(runs)))


def all_under_way(journal: Path, runs: int) -> bool:
    """Every run in the journal, and each running with a model call recorded (or ended)."""
    rows = snapshot(journal)
    return len(rows) >= runs and all(
        row.status in TERMINAL or (row.status == "running" and row.model_calls >= 1)
        for row in rows.values())


def all_stepped(journal: Path, at_kill: Snapshot) -> bool:
    now = snapshot(journal)
    return all(now[run_id].status in TERMINAL or now[run_id].model_calls > row.model_calls
               for run_id, row in at_kill.items() if row.status not in TERMINAL)


def all_ended(journal: Path) -> bool:
    return all(row.status in TERMINAL for row in snapshot(journal).values())


def exactly_once(rows: Snapshot, runs: int) -> str | None:
    """None when every run succeeded with 8 model and 3 tool calls, else the first wrong."""
    if len(rows) != runs:
        return f"{len(rows)} runs in the journal, not {runs}"
    for run_id, row in sorted(rows.items()):
        if (row.status, row.model_calls, row.tool_calls) != (
                "succeeded", MODEL_CALLS_PER_TASK, TOOL_CALLS_PER_TASK):
            return (f"run {run_id}: {row.status}, {row.model_calls} model calls, "
                    f"{row.tool_calls} tool calls")
    return None


def leftovers(nats_pids: list[int]) -> list[str]:
    """Processes that outlived the measure: our children, and the nats-servers seen."""
    alive = [f"{p.name()}:{p.pid}" for p in psutil.Process().children(recursive=True)]
    alive += [f"nats-server:{pid}" for pid in nats_pids if is_alive(pid)]
    return alive


async def _kill_and_restart(config: Path, workdir: Path, first: DaemonProcess, runs: int,
                            timeout_s: float) -> dict[str, object]:
    data_dir = first.data_dir
    journal = data_dir / JOURNAL_FILE
    first.kill()
    at_kill = snapshot(journal)
    in_flight = sum(1 for row in at_kill.values() if row.status not in TERMINAL)
    restarted = time.perf_counter()
    second = DaemonProcess(config, data_dir, workdir / "daemon-2.log")
    try:
        await second.wait_ready()
        ready = time.perf_counter() - restarted
        await poll_until(lambda: all_stepped(journal, at_kill), timeout_s,
                         "every run stepped after the restart")
        stepped = time.perf_counter() - restarted
        await poll_until(lambda: all_ended(journal), timeout_s, "every run ended")
        completed = time.perf_counter() - restarted
    finally:
        await second.stop()
    problem = exactly_once(snapshot(journal), runs)
    return {"in_flight": in_flight, "kill_to_ready_s": round(ready, 3),
            "restart_to_all_stepped_s": round(stepped, 3),
            "restart_to_all_completed_s": round(completed, 3),
            "all_completed": problem is None, "nats_pid": second.nats_pid,
            **({"error": problem} if problem else {})}


async def measure_recovery(runs: int, latency_ms: float, *, workdir: Path | None = None,
                           timeout_s: float = 600.0) -> dict[str, object]:
    """The recovery figures (see the module docstring) as a dict; ``ok`` says if it held."""
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        root = workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        config = write_config(root, latency_ms, local_workers=True)
        data_dir = (root / "data").resolve()
        record: dict[str, object] = {"runs": runs, "L_ms": latency_ms}
        nats_pids: list[int] = []
        first = DaemonProcess(config, data_dir, root / "daemon-1.log")
        try:
            await first.wait_ready()
            assert first.url is not None
            if first.nats_pid is not None:
                nats_pids.append(first.nats_pid)
            await submit(first.url, runs, first.client)
            await poll_until(lambda: all_under_way(data_dir / JOURNAL_FILE, runs), timeout_s,
                             f"{runs} runs under way")
            figures = await _kill_and_restart(config, root, first, runs, timeout_s)
            second_nats = figures.pop("nats_pid")
            if isinstance(second_nats, int):
                nats_pids.append(second_nats)
            record.update(figures)
            if record["in_flight"] != runs:
                record["warning"] = (f"only {record['in_flight']} of {runs} runs were in "
                                     "flight at the kill: raise --latency-ms")
        except (TimeoutError, RuntimeError, BusError, sqlite3.Error) as exc:
            record.update(all_completed=False, error=f"{type(exc).__name__}: {exc}")
        finally:
            await first.stop()
        left = leftovers(nats_pids)
        record["processes_left"] = len(left)
        if left:
            record["leftover"] = left
        record["ok"] = bool(record.get("all_completed")) and not left
        return record


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.recovery", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs in flight (default 1000)")
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS,
                        help="scripted model latency per call; long enough that no run ends "
                        "before the last is under way (8 x L > the time to admit them "
                        f"all; default {DEFAULT_LATENCY_MS:g})")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="deadline of each wait (default 600)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep it (logs, journal); default a temp dir")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    configure_logging("error")
    record = asyncio.run(measure_recovery(args.runs, args.latency_ms, workdir=args.keep,
                                          timeout_s=args.timeout))
    print(json.dumps(record), flush=True)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
