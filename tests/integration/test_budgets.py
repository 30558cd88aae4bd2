"""Nested budgets on a real daemon (real nats-server, real SQLite file): two tenants, a
tenant's day budget that stops its next run ``budget_exhausted`` naming the tenant level,
a restart that keeps the day's spend (the same journal file), and ``warden spend``."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from warden.actors.pricing import PriceTable
from warden.bus.wire import ErrorReply, SpendQuery, SpendReport, encoder, reply_decoder
from warden.supervisor import cli as cli_module
from warden.supervisor.cli import main
from warden.supervisor.planning import plan_messages, plan_system

from tests.integration.harness import api, make_settings, run_task, running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(autouse=True)
def _tests_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``main`` would configure logging for a command line (see test_approvals.py).
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_, **__: None)


async def test_a_tenant_day_budget_survives_a_restart_and_stops_the_tenants_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    async with running_daemon(make_settings(tmp_path)) as (_, client):
        first_a = await run_task(client, "append three entries", scenario="ledger",
                                 tenant="acme")
        first_b = await run_task(client, "append three entries", scenario="ledger",
                                 tenant="bravo")
    assert (first_a.status, first_b.status) == ("succeeded", "succeeded")
    assert first_a.tenant == "acme" and first_a.cost_usd > 0
    # The same data dir and journal. acme's day limit lets a fresh day's plan call through
    # (its worst case), but not after what acme spent today: only the journal tells the
    # new daemon so.
    base = make_settings(tmp_path)
    prices = PriceTable(base.pricing)
    plan_worst = prices.worst_case(
        base.models.planner, prices.estimate_prompt_tokens(
            plan_system(base), plan_messages("append three entries"), []),
        base.models.max_tokens)
    limit = plan_worst + first_a.cost_usd / 2
    settings = make_settings(tmp_path, budgets__tenants={"acme": {"day_usd": limit}})
    async with running_daemon(settings) as (_, client):
        second_a = await run_task(client, "append three entries", scenario="ledger",
                                  tenant="acme")
        second_b = await run_task(client, "append three entries", scenario="ledger",
                                  tenant="bravo")
        report = reply_decoder.decode(await api(client, "spend", encoder.encode(SpendQuery())))
        bad = reply_decoder.decode(await api(client, "spend", b'{"tenant": "no spaces"}'))
        argv = ["spend", "--json", "--data-dir", str(tmp_path / "data")]
        assert await anyio.to_thread.run_sync(main, argv) == 0
        printed = json.loads(capsys.readouterr().out)
        argv = ["spend", "--tenant", "acme", "--data-dir", str(tmp_path / "data")]
        assert await anyio.to_thread.run_sync(main, argv) == 0
        table = capsys.readouterr().out

    assert second_a.status == "budget_exhausted"
    assert second_a.tokens == 0  # refused at its first call: the day's spend was loaded
    assert (second_a.error or "").startswith(
        f"tenant budget ${limit:.4f} of tenant 'acme' for the day would be exceeded")
    assert second_b.status == "succeeded", second_b.error  # bravo has no day limit
    assert isinstance(report, SpendReport)
    day_cost = first_a.cost_usd + first_b.cost_usd + second_b.cost_usd
    assert report.day.level == "day" and report.day.spent_usd == pytest.approx(day_cost)
    assert report.day.left_usd is None  # no day limit configured
    tenants = {t.name: t for t in report.tenants}
    assert set(tenants) == {"acme", "bravo"}
    assert tenants["acme"].spent_usd == pytest.approx(first_a.cost_usd)
    assert tenants["acme"].limit_usd == pytest.approx(limit)
    assert tenants["acme"].left_usd == pytest.approx(limit - first_a.cost_usd, abs=1e-6)
    assert tenants["bravo"].left_usd is None
    assert tenants["bravo"].spent_tokens == first_b.tokens + second_b.tokens
    runs = {r.name: r for r in report.runs}
    assert set(runs) == {first_a.id, first_b.id, second_b.id}  # second_a made no call
    assert runs[first_a.id].tenant == "acme" and runs[first_a.id].status == "succeeded"
    assert runs[first_a.id].limit_usd == settings.limits.run_budget_usd
    assert runs[second_b.id].spent_usd == pytest.approx(second_b.cost_usd)
    assert isinstance(bad, ErrorReply) and bad.field == "tenant"
    assert printed["type"] == "spend.report"
    assert printed["day"]["spent_usd"] == pytest.approx(day_cost)
    assert "acme" in table and "bravo" not in table and "CACHE READ" in table
