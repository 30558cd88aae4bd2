"""Rate limits, end to end (issue 12): a whole daemon whose model is the official SDK
talking HTTP to a fake Messages API (``messages_api.py``) that answers at most 10
requests in any second and refuses the others with a 429 and a ``retry-after``.

Two tenants submit runs at once (interleaved), one four times as many as the other.
Warden's own limit for the model (15 a second, ``[rate_limits.models]``) is above the
provider's, so the first 429s come soon and AIMD has to find the rate. What must hold:

- **no run fails** from rate limiting alone (a 429 is waited out, not an attempt);
- the rate warden sends at, in the server's request log, **converges under** the
  provider's limit (few 429s once it has found it);
- **neither tenant gets less than 40 %** of the requests served while both are waiting
  (round-robin over tenants: first come, first served would give the small one 20 %).

Each task names its tenant (``TaskSubmission.tenant``); the run supervisor hands it to
the run's gate, which hands it to the limiter.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from warden.bus.wire import TaskSubmission
from warden.supervisor.cli import new_run_id, submit_and_follow

from tests.integration.harness import show
from tests.integration.messages_api import MessagesAPI, sliding_window
from tests.integration.test_model_failures import (
    _no_proxies,  # noqa: F401  (the autouse fixture: no proxy between the SDK and the API)
    provider_settings,
    running_daemon_with_key,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

MODEL = "claude-haiku-4-5"
SERVER_LIMIT = 10
"""Requests the fake provider answers in any one second."""
RUNS = {"big": 12, "small": 3}
"""Runs per tenant; each makes 3 model calls (plan, one step, synthesis)."""


async def test_two_tenants_under_a_provider_rate_limit_all_succeed_fairly_under_its_rate(
    tmp_path: Path,
) -> None:
    with MessagesAPI(sliding_window(SERVER_LIMIT, 1.0, retry_after="0.2")) as api:
        settings = provider_settings(
            tmp_path, api.url,
            models__planner=MODEL, models__patience_s=15.0,
            rate_limits__models={MODEL: {"rpm": 15 * 60.0}},
            rate_limits__window_s=0.2, rate_limits__aimd_increase_rpm=12.0,
            rate_limits__max_wait_s=20.0,
        )
        assert settings.roles["research"].model == MODEL  # one endpoint for every call
        async with running_daemon_with_key(settings) as (_daemon, client):
            tasks = []
            for index in range(max(RUNS.values())):  # interleaved: both start at once
                for tenant, count in RUNS.items():
                    if index < count:
                        tasks.append(TaskSubmission(
                            id=new_run_id(), tenant=tenant,
                            text=f"Inspect ({tenant} {index + 1} of {count})"))
            started = time.monotonic()
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for task in tasks:
                        tg.start_soon(lambda t=task: submit_and_follow(
                            client, t, wait=True, progress=False, timeout=20))
            runs = [await show(client, task.id or "") for task in tasks]
    assert {run.tenant for run in runs} == set(RUNS)

    requests = api.requests
    assert [r.status for r in runs] == ["succeeded"] * len(tasks), [r.error for r in runs]
    served = [r for r in requests if r.status == 200]
    assert len(served) == 3 * len(tasks)
    refused = [r for r in requests if r.status == 429]
    assert refused, "the provider never refused: warden's limit was not above it"

    # Converges under the limit: past the first two seconds, at most one request in ten
    # is refused, and the rate sent is within a tenth of the limit.
    settled = [r for r in requests if r.arrived_at >= started + 2.0]
    late_refused = [r for r in settled if r.status == 429]
    assert len(late_refused) <= len(settled) / 10, (len(late_refused), len(settled))
    rate = len(settled) / max(1e-9, max(r.arrived_at for r in settled) - (started + 2.0))
    assert rate <= SERVER_LIMIT * 1.1, rate

    # Fair while both wait: until the small tenant's last request was served, each tenant
    # had the served requests by turns, not by arrival (by arrival the small one's share
    # would be about 3 / 15).
    small_done = max(r.answered_at or 0.0 for r in served if "(small " in r.task)
    both = [r for r in served if (r.answered_at or 0.0) <= small_done]
    share = sum(1 for r in both if "(small " in r.task) / len(both)
    assert 0.4 <= share <= 0.6, (share, len(both))
