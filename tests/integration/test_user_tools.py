"""A role uses the user's own tools end to end: a module of a sync and an async function,
in a temporary directory on ``sys.path``, named in ``[tools.*]``; a whole daemon on a real
nats-server, its scripted model calling them through the workers over NATS."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.integration.harness import make_settings, run_task, running_daemon

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


async def test_a_role_calls_a_sync_and_an_async_user_tool_and_their_outputs_are_journalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    modules = tmp_path / "user_code" / "shop"
    modules.mkdir(parents=True)
    refunds = tmp_path / "refunds.txt"
    (modules / "__init__.py").write_text("", encoding="utf-8")
    (modules / "tools.py").write_text(
        textwrap.dedent(SHOP.format(refunds=str(refunds))), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "user_code"))
    monkeypatch.delitem(__import__("sys").modules, "shop", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "shop.tools", raising=False)
    script = tmp_path / "shop.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    settings = make_settings(
        tmp_path,
        models__script_files=[str(script)],
        tools={
            "lookup": {"function": "shop.tools:lookup", "risk": "low", "side_effects": False},
            "refund": {"function": "shop.tools:refund", "risk": "high", "timeout_s": 20},
        },
        roles__research__tools=["list_files", "lookup", "refund"],
    )

    async with running_daemon(settings) as (daemon, client):
        run = await run_task(client, "refund the damaged order", scenario="shop")
        names = await daemon.journal.tool_call_names(run.id)
        effects = await daemon.journal.effects(run.id)

    assert run.status == "succeeded", run.error
    assert names == ["lookup", "refund"]
    outputs = {e.tool: e.record.output for e in effects.values() if e.record is not None}
    assert outputs == {
        "lookup": '{"order":"o-1","status":"delivered","total":40.0}',
        "refund": "refunded 12.5 on o-1",
    }
    assert all(e.record is not None and e.record.ok for e in effects.values())
    lines = refunds.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1  # the effect happened once, with the call's idempotency key
    key, order, amount = lines[0].split()
    assert (order, amount) == ("o-1", "12.5")
    assert key in {e.key for e in effects.values() if e.tool == "refund"}
    assert run.steps[0].output == "Done: refunded 12.5 on o-1"
