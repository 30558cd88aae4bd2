"""The integration tests' harness: a whole daemon on a real nats-server and SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from warden.bus import subjects
from warden.bus.connection import Bus, open_bus
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
    }
    for dotted, value in overrides.items():
        values[tuple(dotted.split("__"))] = value
    return load_settings(env={}, overrides=values)


@asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[tuple[Daemon, Bus]]:
    """A daemon in-process and a separate connection to it as the ``client`` identity."""
    async with (
        open_daemon(settings) as daemon,
        open_bus(daemon.bus.url, name="test-client",
                 credentials=daemon.credentials("client")) as client,
    ):
        yield daemon, client


async def run_task(
    client: Bus, text: str, *, scenario: str | None = None, budget_usd: float | None = None,
    timeout: float = 60.0,
) -> RunSummary:
    """Submit over NATS, follow the run's events to its end, return the journalled run."""
    task = TaskSubmission(id=new_run_id(), text=text, scenario=scenario, budget_usd=budget_usd)
    await submit_and_follow(client, task, wait=True, progress=False, timeout=timeout)
    return await show(client, task.id or "")


async def show(client: Bus, run_id: str) -> RunSummary:
    raw = await client.request(subjects.API_SHOW, encoder.encode(RunQuery(run_id=run_id)),
                               timeout=10.0)
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
