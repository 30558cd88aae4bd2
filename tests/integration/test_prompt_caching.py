"""Prompt caching end to end (issue 12, point 4): runs through the real daemon, the
Anthropic client and a local Messages API server that counts cache reads and writes;
the journal records them on each call, priced at the cache rates."""

from __future__ import annotations

from pathlib import Path

import pytest
from warden.actors.pricing import PriceTable
from warden.bus.wire import CallView

from tests.integration.harness import run_task
from tests.integration.messages_api import MessagesAPI
from tests.integration.test_model_failures import provider_settings, running_daemon_with_key

pytestmark = pytest.mark.anyio


def plan_call(calls: list[CallView]) -> CallView:
    return next(call for call in calls if call.kind == "model" and call.purpose == "plan")


async def test_a_second_run_reads_the_planners_prefix_from_the_cache_and_pays_less_for_it(
        tmp_path: Path) -> None:
    with MessagesAPI() as api:
        settings = provider_settings(tmp_path, api.url)
        async with running_daemon_with_key(settings) as (daemon, client):
            first = await run_task(client, "Inspect the workspace (first)")
            second = await run_task(client, "Inspect the workspace (second)")
            calls = [await daemon.journal.calls(run.id) for run in (first, second)]
    assert first.status == second.status == "succeeded"
    written, read = plan_call(calls[0]), plan_call(calls[1])
    # The planner's tools and system prompt are the same for every run: written by the
    # first run's plan call, read by the second's.
    assert written.cache_creation_tokens > 0 and written.cache_read_tokens == 0
    assert read.cache_read_tokens > 0
    prices = PriceTable(settings.pricing)
    entry = prices.price(read.name)
    assert read.cost_usd == pytest.approx(
        (read.input_tokens * entry.input_per_mtok + read.output_tokens * entry.output_per_mtok
         + read.cache_read_tokens * entry.cache_read_per_mtok
         + read.cache_creation_tokens * entry.cache_write_per_mtok) / 1e6, rel=1e-6)
    # The run's tokens count the cached ones too (every token the provider billed).
    assert second.tokens == sum(c.input_tokens + c.output_tokens + c.cache_read_tokens
                                + c.cache_creation_tokens for c in calls[1] if c.kind == "model")


async def test_caching_off_sends_no_cache_points(tmp_path: Path) -> None:
    with MessagesAPI() as api:
        settings = provider_settings(tmp_path, api.url, models__prompt_caching=False)
        async with running_daemon_with_key(settings) as (_daemon, client):
            await run_task(client, "Inspect the workspace")
            await run_task(client, "Inspect the workspace again")
        assert api.requests and all("cache_control" not in str(r.body) for r in api.requests)
