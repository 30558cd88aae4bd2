"""What the dashboard reads of the journal: spend per UTC day and model within a window
(``supervisor/journal_views.py``); the runs search by id or text, status and limit
(``Journal.page_runs``); a run's plan and approval requests (``Journal.run_state``,
``Journal.approvals``)."""

from __future__ import annotations

import types

import pytest
from warden.bus.wire import RunSummary, Usage
from warden.supervisor import journal as journal_module
from warden.supervisor.journal import ApprovalRecord, Journal
from warden.supervisor.journal_views import cost_per_day_and_model

pytestmark = pytest.mark.anyio

DAY = 86_400.0
NOON = 20_000 * DAY + DAY / 2  # 2024-10-04 12:00 UTC


async def call_at(journal: Journal, monkeypatch: pytest.MonkeyPatch, at: float, model: str,
                  cost: float, tokens: tuple[int, int, int, int] = (10, 5, 2, 1)) -> None:
    monkeypatch.setattr(journal_module, "time", types.SimpleNamespace(time=lambda: at))
    usage = Usage(input_tokens=tokens[0], output_tokens=tokens[1],
                  cache_read_input_tokens=tokens[2], cache_creation_input_tokens=tokens[3])
    await journal.record_turn("r-1", step=0, turn=0, purpose="step", model=model,
                              request={}, response={}, usage=usage, cost_usd=cost,
                              latency_ms=1.0)
    monkeypatch.undo()


async def test_spend_is_summed_per_utc_day_and_model_within_the_window(
        journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    await call_at(journal, monkeypatch, NOON, "haiku", 0.25)
    await call_at(journal, monkeypatch, NOON + 11 * 3600, "haiku", 0.5)  # 23:00, same day
    await call_at(journal, monkeypatch, NOON + 12 * 3600, "haiku", 1.0)  # 00:00, next day
    await call_at(journal, monkeypatch, NOON + 1, "sonnet", 2.0)
    await call_at(journal, monkeypatch, NOON - 20 * DAY, "sonnet", 99.0)  # outside 14 days
    await journal.sync()
    rows = await cost_per_day_and_model(journal, days=14, now=NOON + DAY)
    assert [(r.day, r.model, r.calls, r.cost_usd) for r in rows] == [
        ("2024-10-05", "haiku", 1, 1.0),
        ("2024-10-04", "haiku", 2, 0.75),
        ("2024-10-04", "sonnet", 1, 2.0),
    ]
    assert (rows[1].input_tokens, rows[1].output_tokens, rows[1].cache_tokens) == (20, 10, 6)
    assert await cost_per_day_and_model(journal, days=1, now=NOON + 30 * DAY) == []


async def test_runs_are_found_by_id_or_text_and_filtered_by_status(journal: Journal) -> None:
    await journal.create_run("r-alpha", text="Fix the LEDGER bug", status="queued")
    await journal.create_run("r-beta", text="x" * 300 + " ledger", status="queued")
    await journal.create_run("r-gamma", text="nothing", status="rejected", error="bad")
    await journal.sync()
    async def search_runs(*, status: str | None, text: str, limit: int) -> list[RunSummary]:
        return [run for _, run in await journal.page_runs(limit=limit, status=status,
                                                           text=text)]

    found = await search_runs(status=None, text="ledger", limit=10)
    assert [r.id for r in found] == ["r-beta", "r-alpha"]  # newest first; text past the cut
    assert found[0].truncated and len(found[0].text) == 200
    assert [r.id for r in await search_runs(status=None, text="GAMMA", limit=10)
            ] == ["r-gamma"]
    assert [r.id for r in await search_runs(status="queued", text="", limit=10)
            ] == ["r-beta", "r-alpha"]
    assert [r.id for r in await search_runs(status=None, text="", limit=1)
            ] == ["r-gamma"]
    assert await search_runs(status="succeeded", text="", limit=10) == []


async def test_a_runs_plan_and_approvals_are_read_back(journal: Journal) -> None:
    async def run_plan(_journal: Journal, run_id: str) -> str | None:
        state = await journal.run_state(run_id)
        return None if state is None else state.plan

    async def approvals_of_run(_journal: Journal, run_id: str) -> list[ApprovalRecord]:
        return await journal.approvals(status=None, run_id=run_id)

    await journal.create_run("r-1", text="t", status="queued")
    await journal.sync()
    assert await run_plan(journal, "r-1") is None
    await journal.transition("r-1", "planning")
    await journal.transition("r-1", "running", plan='{"steps": []}')
    assert await run_plan(journal, "r-1") == '{"steps": []}'
    assert await run_plan(journal, "r-none") is None
    assert await approvals_of_run(journal, "r-1") == []
    for index, run_id in enumerate(("r-1", "r-2", "r-1")):
        await journal.record_approval(ApprovalRecord(
            id=f"ap-{index}", run_id=run_id, step=0, call_key=f"k{index}", tool="bump",
            arguments={"n": index}, risk="high", why="w", hash="h", created_at=float(index),
            expires_at=100.0, status="pending"))
    await journal.decide_approval("ap-0", status="approved", decided_by="UOP", reason="ok",
                                  decided_at=2.0)
    found = await approvals_of_run(journal, "r-1")
    assert [(a.id, a.status, a.decided_by, a.arguments) for a in found] == [
        ("ap-0", "approved", "UOP", {"n": 0}), ("ap-2", "pending", None, {"n": 2})]
