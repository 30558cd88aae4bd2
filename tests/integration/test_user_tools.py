"""A role uses the user's own tools end to end: a module of a sync and an async function,
in a temporary directory on ``sys.path`` (``PYTHONPATH`` for a ``warden worker``
process), named in ``[tools.*]``; a whole daemon on a real nats-server, its scripted
model calling them through the workers over NATS."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from warden.config import Settings
from warden.supervisor.daemon import Daemon

from tests.integration.harness import make_settings, run_task, running_daemon, worker_process

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SHOP = '''
"""A shop's tools, as a user writes them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import msgspec

REFUNDS = Path({refunds!r})


async def lookup(order_id: str) -> dict[str, object]:
    """Look an order up: its status and total."""
    await asyncio.sleep(0)
    return {{"order": order_id, "status": "delivered", "total": 40.0}}


def refund(
    order_id: str,
    amount: Annotated[float, msgspec.Meta(gt=0, le=100)],
    idempotency_key: str,
) -> str:
    """Refund part of an order to the card it was paid with."""
    with REFUNDS.open("a", encoding="utf-8") as file:
        file.write(f"{{idempotency_key}} {{order_id}} {{amount}}\\n")
    return f"refunded {{amount}} on {{order_id}}"
'''

SCRIPT = '''
[scenario.shop]
synthesis = "Refunded the damaged order."
[[scenario.shop.plan]]
role = "research"
instruction = "Look order o-1 up and refund 12.5 of it."
[[scenario.shop.turns.research]]
tool = "lookup"
input = { order_id = "o-1" }
[[scenario.shop.turns.research]]
tool = "refund"
input = { order_id = "o-1", amount = 12.5 }
[[scenario.shop.turns.research]]
text = "Done: {last_result}"
'''


TOOLS = {
    "lookup": {"function": "shop.tools:lookup", "risk": "low", "side_effects": False},
    # medium: the shipped roles auto-approve it (a high one waits for a human: approvals)
    "refund": {"function": "shop.tools:refund", "risk": "medium", "timeout_s": 20},
}
ROLE_TOOLS = ["list_files", "lookup", "refund"]


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's module ``shop.tools`` under ``tmp_path/user_code``, importable here;
    returns the file its ``refund`` appends to."""
    package = tmp_path / "user_code" / "shop"
    package.mkdir(parents=True)
    refunds = tmp_path / "refunds.txt"
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "tools.py").write_text(
        textwrap.dedent(SHOP.format(refunds=str(refunds))), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "user_code"))
    monkeypatch.delitem(sys.modules, "shop", raising=False)
    monkeypatch.delitem(sys.modules, "shop.tools", raising=False)
    return refunds


def shop_settings(tmp_path: Path, **overrides: object) -> Settings:
    script = tmp_path / "shop.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    return make_settings(tmp_path, models__script_files=[str(script)], tools=TOOLS,
                         roles__research__tools=ROLE_TOOLS, **overrides)


async def assert_refunded_once(daemon: Daemon, run_id: str, refunds: Path) -> None:
    """The run's two user tool calls are journalled with their outputs, and the refund
    acted once, with the call's idempotency key."""
    names = await daemon.journal.tool_call_names(run_id)
    effects = await daemon.journal.effects(run_id)
    assert names == ["lookup", "refund"]
    outputs = {e.tool: e.record.output for e in effects.values() if e.record is not None}
    assert outputs == {
        "lookup": '{"order":"o-1","status":"delivered","total":40.0}',
        "refund": "refunded 12.5 on o-1",
    }
    assert all(e.record is not None and e.record.ok for e in effects.values())
    lines = refunds.read_text(encoding="utf-8").splitlines()  # noqa: ASYNC240 - a test's read
    assert len(lines) == 1
    key, order, amount = lines[0].split()
    assert (order, amount) == ("o-1", "12.5")
    assert key in {e.key for e in effects.values() if e.tool == "refund"}


async def test_a_role_calls_a_sync_and_an_async_user_tool_and_their_outputs_are_journalled(
    tmp_path: Path, shop: Path,
) -> None:
    async with running_daemon(shop_settings(tmp_path)) as (daemon, client):
        run = await run_task(client, "refund the damaged order", scenario="shop")
        await assert_refunded_once(daemon, run.id, shop)
    assert run.status == "succeeded", run.error
    assert run.steps[0].output == "Done: refunded 12.5 on o-1"


async def test_a_worker_process_imports_the_user_tools_from_its_pythonpath(
    tmp_path: Path, shop: Path,
) -> None:
    settings = shop_settings(tmp_path, local_workers=False)
    async with running_daemon(settings) as (daemon, client):
        env = {
            "PYTHONPATH": str(tmp_path / "user_code"),
            "WARDEN_MODELS__SCRIPT_FILES": json.dumps(settings.models.script_files),
            "WARDEN_ROLES__RESEARCH__TOOLS": json.dumps(ROLE_TOOLS),
            **{f"WARDEN_TOOLS__{name.upper()}__{key.upper()}": str(value).lower()
               if isinstance(value, bool) else str(value)
               for name, table in TOOLS.items() for key, value in table.items()},
        }
        async with worker_process(daemon, ["research"], tmp_path / "worker",
                                  env=env) as worker:
            assert "serving warden.work.research" in worker.banner, worker.banner
            run = await run_task(client, "refund the damaged order", scenario="shop")
            await assert_refunded_once(daemon, run.id, shop)
    assert run.status == "succeeded", run.error
    assert worker.returncode == 0
