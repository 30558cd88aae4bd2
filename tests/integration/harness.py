"""The integration tests' harness: a whole daemon on a real nats-server and SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from warden.bus import subjects
from warden.bus.connection import Bus, open_bus
from warden.bus.identities import Identity
from warden.bus.wire import RunQuery, RunSummary, TaskSubmission, encoder, reply_decoder
from warden.config import Settings, load_settings
from warden.supervisor.cli import new_run_id, submit_and_follow
from warden.supervisor.daemon import Daemon, open_daemon

LOOP_SCRIPT = """
# A worker whose model always asks for one more tool.
[scenario.loop]
[[scenario.loop.plan]]
role = "research"
instruction = "Look around forever."
[[scenario.loop.turns.research]]
tool = "list_files"
input = { path = "." }

# Plans that fail validation: twice for bad_plan, once for fixed_plan.
[scenario.bad_plan]
plan_texts = [
  "this is not json",
  '{"steps": [{"role": "janitor", "instruction": "x"}]}',
]

[scenario.fixed_plan]
plan_texts = [
  '{"steps": []}',
  '{"steps": [{"role": "research", "instruction": "look"}]}',
]
[[scenario.fixed_plan.turns.research]]
text = "nothing here"

# A code step whose review fails: the reviewer says FAIL every time.
[scenario.failing_review]
[[scenario.failing_review.plan]]
role = "review"
instruction = "Judge."
[[scenario.failing_review.turns.review]]
text = "FAIL: the tests do not pass"
"""


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a daemon in ``tmp_path``: embedded NATS, scripted model, test scripts."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "test_scripts.toml"
    script.write_text(LOOP_SCRIPT, encoding="utf-8")
    values: dict[tuple[str, ...], object] = {
        ("data_dir",): str(tmp_path / "data"),
        ("models", "provider"): "scripted",
        ("models", "script_files"): [str(script)],
        ("sandbox", "timeout_s"): 60.0,
        # The `loop` scenario is a runaway worker that the turn cap and cancellation tests
        # need to run on: loop detection (supervisor/policy.py) would stop it at its third
        # identical call. Tests of the guards set it.
        ("policy", "loop_threshold"): 0,
        # Daemons of one test run side by side: each HTTP server on a free port.
        ("http", "port"): 0,
    }
    for dotted, value in overrides.items():
        values[tuple(dotted.split("__"))] = value
    return load_settings(env={}, overrides=values)


_DAEMON_OF: dict[int, str] = {}  # id(client) -> the daemon id running_daemon made it for


@asynccontextmanager
async def running_daemon(
    settings: Settings, *, identity: Identity = "client",
) -> AsyncIterator[tuple[Daemon, Bus]]:
    """A daemon in-process and a separate connection to it as ``identity`` (a client's
    by default; the operator's may call every API verb)."""
    async with (
        open_daemon(settings) as daemon,
        open_bus(daemon.bus.url, name=f"test-{identity}",
                 credentials=daemon.credentials(identity)) as client,
    ):
        _DAEMON_OF[id(client)] = daemon.daemon_id
        try:
            yield daemon, client
        finally:
            del _DAEMON_OF[id(client)]


@dataclass
class WorkerProcess:
    """A ``warden worker`` process started by ``worker_process``."""

    banner: str
    """Its first line on stderr: ``warden worker <roles>: serving <subjects> on <url>``."""
    returncode: int | None = None
    """Its exit code, once it was stopped (on leaving ``worker_process``)."""


@asynccontextmanager
async def worker_process(
    daemon: Daemon, roles: Sequence[str], data_dir: Path, *, env: Mapping[str, str] = {},
) -> AsyncIterator[WorkerProcess]:
    """A ``warden worker --role ...`` process for ``daemon``, as on another machine:
    ``--nats`` with the worker identity's seed, the scripted model, our environment
    without any ``WARDEN_*`` variable or API key, plus ``env``. Entered once it says it
    serves (within 30 s); on exit SIGTERM, then reaped by pid (``returncode``)."""
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("WARDEN_") and k != "ANTHROPIC_API_KEY"}
    environment |= {
        "WARDEN_MODELS__PROVIDER": "scripted",
        # With --nats, a worker connects as configured: the worker identity's seed.
        "WARDEN_NATS_NKEY_SEED": str(daemon.credentials("worker").nkey_seed),
        **env,
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, reaped below
        [sys.executable, "-m", "warden", "worker",
         *(arg for role in roles for arg in ("--role", role)), "--log-level", "error",
         "--nats", daemon.bus.url, "--data-dir", str(data_dir)],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        with anyio.fail_after(30):
            line = await anyio.to_thread.run_sync(proc.stderr.readline,
                                                  abandon_on_cancel=True)
        worker = WorkerProcess(banner=line.decode())
        yield worker
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(proc.wait, 10)
    worker.returncode = code


async def daemon_of(client: Bus) -> str:
    """The id of the daemon ``client`` talks to: the one ``running_daemon`` started, else
    the only one answering ``$SRV.PING.warden`` on its server."""
    known = _DAEMON_OF.get(id(client))
    if known is not None:
        return known
    found = await client.discover(subjects.SERVICE_PING, timeout=5.0)
    ids = {f.metadata.get("daemon_id") for f in found}
    assert len(ids) == 1 and None not in ids, f"not one daemon on the server: {found}"
    return str(ids.pop())


async def api(client: Bus, verb: subjects.ApiVerb, data: bytes, *, timeout: float = 10.0) -> bytes:
    """One request to the API of the daemon ``client`` talks to (``daemon_of``)."""
    return await client.request(subjects.api(await daemon_of(client), verb), data,
                                timeout=timeout)


async def run_task(
    client: Bus, text: str, *, scenario: str | None = None, budget_usd: float | None = None,
    timeout: float = 60.0, tenant: str | None = None,
) -> RunSummary:
    """Submit over NATS, follow the run's events to its end, return the journalled run."""
    task = TaskSubmission(id=new_run_id(), text=text, scenario=scenario, budget_usd=budget_usd,
                          tenant=tenant)
    await submit_and_follow(client, task, wait=True, progress=False, timeout=timeout)
    return await show(client, task.id or "")


async def show(client: Bus, run_id: str) -> RunSummary:
    raw = await api(client, "show", encoder.encode(RunQuery(run_id=run_id)))
    reply = reply_decoder.decode(raw)
    assert isinstance(reply, RunSummary), reply
    return reply


async def wait_for(predicate_async, *, timeout: float = 20.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll an async predicate until it returns a truthy value, within ``timeout``."""
    with anyio.fail_after(timeout):
        while True:
            value = await predicate_async()
            if value:
                return value
            await anyio.sleep(interval)
