"""Model failures, end to end: a whole daemon (real nats-server, real SQLite) whose model is
the official SDK talking HTTP to a fake Messages API (``messages_api.py``) that rate-limits,
refuses, answers slowly or is not there at all.

What "done" means (issue 8): a failing endpoint ends each run within the call's patience,
with a reason naming what failed; one model call makes at most ``models.attempts``
requests; nothing goes out for a run after it ended; a request past its deadline is
cancelled (the provider sees the client go and bills nothing), and the tokens warden
records are the tokens the provider billed.

Every run's end is awaited on its terminal event (``submit_and_follow``), the way
``warden submit --wait`` awaits it. A watchdog reads the journal meanwhile: a run the
journal has ended whose terminal event is not published within ``EVENT_GRACE_S`` fails
the test at once, saying so, rather than after the whole deadline.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic
import anyio
import pytest
from warden.bus.connection import Bus, open_bus
from warden.bus.wire import RunSummary, TaskSubmission
from warden.config import Settings
from warden.supervisor.cli import new_run_id, submit_and_follow
from warden.supervisor.daemon import Daemon, open_daemon
from warden.supervisor.run import TERMINAL

from tests.integration.harness import make_settings, show
from tests.integration.messages_api import (
    RATE_LIMITED,
    SPEND_LIMIT_REACHED,
    MessagesAPI,
    always,
    closed_url,
    hold_nth,
)
from tests.integration.warden_process import warden_up

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

API_KEY = "sk-ant-test"
PATIENCE_S = 8.0
"""``models.patience_s`` of these tests: long enough for a few ``retry-after: 2``."""
EVENT_GRACE_S = 5.0
"""How long a run ended in the journal may wait for its terminal event to be published."""
QUIET_S = 3.0
"""How long the endpoint is watched after the runs ended, for requests that should not
come: longer than the 2 s ``retry-after`` a late retry would honour. An absence can only
be observed over a window; this is that window, not a wait for something to happen."""

RATE_LIMIT_REASON = re.compile(r"(?i)rate.?limit")
SPEND_LIMIT_REASON = re.compile(r"(?i)spend.?limit")
UNREACHABLE_REASON = re.compile(
    r"(?i)unreachable|connection (failed|refused)|could not connect|cannot connect"
)


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK honours proxy variables: nothing may stand between it and 127.0.0.1."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy", "ANTHROPIC_CUSTOM_HEADERS", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def provider_settings(tmp_path: Path, base_url: str, **overrides: object) -> Settings:
    """A daemon whose model is the Anthropic client on ``base_url``, with short waits."""
    values: dict[str, object] = {
        "models__provider": "anthropic",
        "models__anthropic_base_url": base_url,
        "models__patience_s": PATIENCE_S,
        "models__timeout_s": 5.0,
        "limits__retry_base_s": 0.01,
        "limits__retry_max_s": 0.1,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


@asynccontextmanager
async def running_daemon_with_key(settings: Settings) -> AsyncIterator[tuple[Daemon, Bus]]:
    """``harness.running_daemon``, with an API key for the Anthropic client."""
    async with (
        open_daemon(settings, api_key=API_KEY) as daemon,
        open_bus(daemon.bus.url, name="test-client",
                 credentials=daemon.credentials("client")) as client,
    ):
        yield daemon, client


@dataclass(frozen=True)
class Ended:
    """A run that ended: as journalled, with when it was submitted and when its terminal
    event arrived (``time.monotonic()``, the clock of the fake API's records)."""

    run: RunSummary
    marker: str
    submitted_at: float
    ended_at: float

    @property
    def seconds(self) -> float:
        return self.ended_at - self.submitted_at


def task_texts(count: int) -> Iterator[tuple[str, str]]:
    """``(marker, text)`` of ``count`` tasks; the marker finds a task's requests."""
    for index in range(count):
        marker = f"(task {index + 1} of {count})"
        yield marker, f"Inspect the workspace {marker}"


async def finish_runs(
    daemon: Daemon, client: Bus, count: int, *, within: float
) -> list[Ended]:
    """Submit ``count`` tasks at once and follow each to its terminal event.

    Fails the test if the runs have not all ended within ``within`` seconds, or if the
    journal ends a run whose terminal event is not published within ``EVENT_GRACE_S``.
    """
    tasks = [(marker, TaskSubmission(id=new_run_id(), text=text))
             for marker, text in task_texts(count)]
    ended_at: dict[str, float] = {}
    stuck: list[str] = []
    started = time.monotonic()

    async def follow(task: TaskSubmission) -> None:
        await submit_and_follow(client, task, wait=True, progress=False, timeout=within + 10)
        ended_at[task.id or ""] = time.monotonic()

    async def watch_journal(scope: anyio.CancelScope) -> None:
        ended_in_journal: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for _, task in tasks:
                run_id = task.id or ""
                if run_id in ended_at:
                    continue
                status = await daemon.journal.run_status(run_id)
                if status in TERMINAL:
                    first = ended_in_journal.setdefault(run_id, now)
                    if now - first > EVENT_GRACE_S:
                        stuck.append(
                            f"run {run_id!r} is {status!r} in the journal, but its terminal "
                            f"event was not published within {EVENT_GRACE_S:g}s "
                            f"(after {first - started:.1f}s)"
                        )
                        scope.cancel()
                        return
            await anyio.sleep(0.1)

    with anyio.move_on_after(within) as deadline:
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as follows:
                for _, task in tasks:
                    follows.start_soon(follow, task)
                tg.start_soon(watch_journal, follows.cancel_scope)
            tg.cancel_scope.cancel()
    # AssertionError, not pytest.fail: anyio's test runner leaves a BaseException (which
    # pytest.fail raises) unretrieved in its task, and asyncio then logs it from a finalizer.
    if stuck:
        raise AssertionError(stuck[0])
    if deadline.cancelled_caught or len(ended_at) < len(tasks):
        statuses = [await daemon.journal.run_status(t.id or "") for _, t in tasks]
        raise AssertionError(f"{len(tasks) - len(ended_at)} of {len(tasks)} runs had not ended "
                             f"within {within:g}s; journal statuses: {statuses}")
    return [
        Ended(run=await show(client, task.id or ""), marker=marker, submitted_at=started,
              ended_at=ended_at[task.id or ""])
        for marker, task in tasks
    ]


def late_requests(api: MessagesAPI, runs: list[Ended]) -> list[str]:
    """Requests for a run that arrived after the run had ended."""
    return [
        f"{request.kind} request for {run.marker} {request.arrived_at - run.ended_at:.1f}s "
        "after its run ended"
        for run in runs for request in api.for_task(run.marker)
        if request.arrived_at > run.ended_at
    ]


# -- the fake provider, through the SDK: what the tests below rely on ----------------------


async def test_fake_api_spend_limit_refusal_is_the_sdks_spend_limit_error() -> None:
    with MessagesAPI(always(SPEND_LIMIT_REACHED)) as api:
        async with anthropic.AsyncAnthropic(api_key=API_KEY, base_url=api.url,
                                            max_retries=0) as sdk:
            with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as caught:
                await sdk.messages.create(model="claude-fake-1", max_tokens=16,
                                          messages=[{"role": "user", "content": "hi"}])

    assert caught.value.status_code == 429
    assert caught.value.response.headers.get("retry-after") is None
    [request] = api.requests
    assert request.status == 429 and not request.billed


async def test_fake_api_bills_what_it_delivers_and_not_what_the_client_abandoned() -> None:
    with MessagesAPI(hold_nth("step", 0, hold_s=5.0)) as api:
        async with anthropic.AsyncAnthropic(api_key=API_KEY, base_url=api.url,
                                            max_retries=0, timeout=0.5) as sdk:
            with pytest.raises(anthropic.APITimeoutError):
                await sdk.messages.create(model="claude-fake-1", max_tokens=16,
                                          messages=[{"role": "user", "content": "hi"}])
            answer = await sdk.messages.create(model="claude-fake-1", max_tokens=16,
                                               messages=[{"role": "user", "content": "hi"}],
                                               timeout=30)
            # The server's handler notices the abandoned request within its 20 ms poll;
            # on a loaded machine that thread may run late: wait for it, with a deadline.
            with anyio.fail_after(10):
                while not api.requests[0].client_gone:  # noqa: ASYNC110 - a server thread
                    await anyio.sleep(0.02)

    abandoned, delivered = api.requests
    assert abandoned.client_gone and not abandoned.billed
    assert abandoned.gone_at is not None and abandoned.gone_at - abandoned.arrived_at < 5.0
    assert delivered.status == 200 and not delivered.client_gone
    assert api.billed_tokens() == answer.usage.input_tokens + answer.usage.output_tokens > 0


# -- (a) 429 to everything, retry-after: 2 ----------------------------------------------


async def test_429_to_every_request_ends_each_run_naming_the_rate_limit_after_at_most_4_requests(
    tmp_path: Path,
) -> None:
    with MessagesAPI(always(RATE_LIMITED)) as api:
        settings = provider_settings(tmp_path, api.url)
        async with running_daemon_with_key(settings) as (daemon, client):
            runs = await finish_runs(daemon, client, 3, within=PATIENCE_S + 60)
            await anyio.sleep(QUIET_S)  # the observation window (see QUIET_S)

    for ended in runs:
        assert ended.run.status == "failed", ended.run
        assert RATE_LIMIT_REASON.search(ended.run.error or ""), ended.run.error
        assert ended.seconds <= PATIENCE_S + 60
    # Each run makes one model call (its plan) before it must fail: 4 requests at most.
    assert api.counts() == {"plan": api.count(), "step": 0, "synth": 0}
    assert api.count() <= 4 * len(runs)
    assert all(len(api.for_task(r.marker)) <= 4 for r in runs)
    assert late_requests(api, runs) == []


# -- (b) the spend cap: 429, no retry-after, enforced_spend_limit_reached ----------------


async def test_spend_limit_refusals_end_10_runs_within_30s_naming_it_after_at_most_3_requests_each(
    tmp_path: Path,
) -> None:
    with MessagesAPI(always(SPEND_LIMIT_REACHED)) as api:
        settings = provider_settings(tmp_path, api.url)
        async with running_daemon_with_key(settings) as (daemon, client):
            runs = await finish_runs(daemon, client, 10, within=30.0)
            await anyio.sleep(QUIET_S)  # the observation window (see QUIET_S)

    for ended in runs:
        assert ended.run.status == "failed", ended.run
        assert SPEND_LIMIT_REASON.search(ended.run.error or ""), ended.run.error
    per_run = {r.marker: len(api.for_task(r.marker)) for r in runs}
    assert all(1 <= count <= 3 for count in per_run.values()), per_run
    assert late_requests(api, runs) == []


async def test_a_spend_limit_refusal_is_never_retried(tmp_path: Path) -> None:
    with MessagesAPI(always(SPEND_LIMIT_REACHED)) as api:
        settings = provider_settings(tmp_path, api.url)
        async with running_daemon_with_key(settings) as (daemon, client):
            runs = await finish_runs(daemon, client, 10, within=30.0)

    assert {r.marker: len(api.for_task(r.marker)) for r in runs} == {r.marker: 1 for r in runs}


# -- (c) the API is unreachable: the real CLI against a real `warden up` ------------------


@pytest.mark.timeout(90)
def test_submit_wait_against_an_unreachable_api_fails_promptly_saying_so(
    tmp_path: Path,
) -> None:
    patience = 4.0
    settings = {
        "models": {"provider": "anthropic", "anthropic_base_url": closed_url(),
                   "patience_s": patience, "timeout_s": 2.0},
        "limits": {"retry_base_s": 0.01, "retry_max_s": 0.1},
    }
    with warden_up(tmp_path, settings, api_key=API_KEY) as daemon:
        submitted = daemon.submit_wait("Inspect the workspace", timeout=patience + 30)
        journalled = daemon.journal_status(submitted.run_id)

    assert submitted.returncode == 1, submitted
    assert submitted.seconds <= patience + 30
    run = json.loads(submitted.stdout)
    assert run["status"] == "failed"
    assert UNREACHABLE_REASON.search(run["error"] or ""), run["error"]
    assert "Traceback" not in submitted.stderr
    assert journalled == "failed"


# -- (d) one call past its deadline -------------------------------------------------------


async def test_a_call_past_its_deadline_is_cancelled_and_warden_records_what_was_billed(
    tmp_path: Path,
) -> None:
    timeout_s, hold_s = 2.0, 6.0
    with MessagesAPI(hold_nth("step", 0, hold_s=hold_s)) as api:
        settings = provider_settings(tmp_path, api.url, models__timeout_s=timeout_s)
        async with running_daemon_with_key(settings) as (daemon, client):
            [ended] = await finish_runs(daemon, client, 1, within=60.0)
            journalled_tokens, _ = await daemon.journal.spent(ended.run.id)

    assert ended.run.status == "succeeded", ended.run.error
    held, *rest = [r for r in api.requests if r.kind == "step"]
    assert len(rest) == 1, "the step's call was made again, and answered"
    # The held request was abandoned by the client at its deadline, not left running.
    assert held.client_gone and held.gone_at is not None
    assert timeout_s - 0.1 <= held.gone_at - held.arrived_at < hold_s
    assert not held.billed
    assert api.billed_tokens() > 0
    assert ended.run.tokens == api.billed_tokens()
    assert journalled_tokens == api.billed_tokens()
