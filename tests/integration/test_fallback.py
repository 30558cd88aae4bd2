"""Model tiering and fallback, end to end (issue 12 point 3): a whole daemon (real
nats-server, real SQLite) whose model is the official SDK against the fake Messages API
(``messages_api.py``). While the first model of every chain answers 529 (overloaded), the
second serves at once, first after each 529 and then, once the first's breaker is open,
without asking the first at all; when the first recovers (its breaker's cooldown over,
a probe succeeds) the chains return to it. Each call records which model served and why,
and no run spends past its budget."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.integration.harness import run_task, wait_for
from tests.integration.messages_api import Answer, MessagesAPI, Refuse, Request
from tests.integration.test_model_failures import provider_settings, running_daemon_with_key

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIRST, SECOND = "claude-sonnet-4-6", "claude-haiku-4-5"
OVERLOADED = Refuse(529, "overloaded_error", "Overloaded")
BUDGET_USD = 0.25


class FirstModelOutage:
    """The policy: 529 to every request for ``FIRST`` until ``end``."""

    def __init__(self) -> None:
        self._over = threading.Event()

    def end(self) -> None:
        self._over.set()

    def __call__(self, request: Request) -> Answer | Refuse:
        if request.body.get("model") == FIRST and not self._over.is_set():
            return OVERLOADED
        return Answer()


async def test_a_chain_serves_from_its_second_model_during_an_outage_and_returns(
    tmp_path: Path,
) -> None:
    outage = FirstModelOutage()
    with MessagesAPI(outage) as api:
        settings = provider_settings(
            tmp_path, api.url, models__planner=FIRST, models__planner_fallback=[SECOND],
            roles__research__model=FIRST, roles__research__fallback=[SECOND],
            breaker__failure_threshold=2, breaker__cooldown_s=0.5,
            limits__run_budget_usd=BUDGET_USD)
        async with running_daemon_with_key(settings) as (daemon, client):
            during = await run_task(client, "Inspect the workspace (during)")
            breaker = daemon.context.model_breakers[FIRST]
            assert breaker.state == "open"

            outage.end()

            async def cooled_down() -> bool:
                return breaker.state == "half_open"

            await wait_for(cooled_down, timeout=5)
            after = await run_task(client, "Inspect the workspace (after)")

            assert daemon.metrics is not None
            fallbacks = {reason: daemon.metrics.registry.get_sample_value(
                "warden_model_fallbacks_total", {"model": SECOND, "reason": reason})
                for reason in ("overloaded", "breaker_open")}
            calls = {run.id: [json.loads(c.request) for c in
                              await daemon.journal.calls(run.id) if c.kind == "model"]
                     for run in (during, after)}

    assert during.status == after.status == "succeeded"
    # During: plan and step each met a 529 (two open the breaker); the synthesis then
    # went straight to the second model, past the open breaker.
    assert [(r.body.get("model"), r.status) for r in api.for_task("(during)")] == [
        (FIRST, 529), (SECOND, 200), (FIRST, 529), (SECOND, 200), (SECOND, 200)]
    assert [(c["model"], c.get("served_by"), c.get("fallback"))
            for c in calls[during.id]] == [
        (FIRST, SECOND, "overloaded"), (FIRST, SECOND, "overloaded"),
        (FIRST, SECOND, "breaker_open")]
    assert fallbacks == {"overloaded": 2, "breaker_open": 1}
    # After: every call served by the first model, none by a fallback.
    assert [(r.body.get("model"), r.status) for r in api.for_task("(after)")] == [
        (FIRST, 200)] * 3
    assert all("fallback" not in c for c in calls[after.id])
    for run in (during, after):
        assert 0 < run.cost_usd <= BUDGET_USD
