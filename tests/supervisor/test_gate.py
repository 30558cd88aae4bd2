"""The call gate, driven through whole runs on the in-memory dispatcher: unknown tools,
interceptors answering allow / deny / pause / substitute, and model calls that fail
(attempts, refusals, patience, the endpoint breaker). The fakes are in ``run_fakes.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from warden.actors.errors import ModelRateLimitedError, ModelRequestError, ModelUnavailableError
from warden.actors.model import ModelReply, ModelRequest
from warden.bus.wire import ToolCallRecord
from warden.supervisor.interceptors import (
    Allow,
    Decision,
    Deny,
    ModelCall,
    Pause,
    Substitute,
    ToolCall,
)
from warden.supervisor.journal import Journal

from tests.supervisor.run_fakes import (
    Answer,
    CountingTool,
    harness,
    plan_of,
    scripted,
    text,
    use,
)

pytestmark = pytest.mark.anyio



# -- the gate: unknown tools and interceptors -------------------------------------------


async def test_an_unknown_tool_is_refused_before_any_intent_is_written(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, scripted(
        plan_of(("research", "call a ghost")),
        {"research": [use("ghost"), text("gave up on the ghost")]},
    ))

    assert await h.run() == "succeeded"

    effects = await journal.effects("r-1")
    (effect,) = effects.values()
    assert effect.state == "done" and effect.record is not None
    assert not effect.record.ok
    assert effect.record.output == "unknown tool 'ghost': not called"
    second_turn = h.model.calls("step")[1].messages[-1].content[0]
    assert "unknown tool 'ghost'" in getattr(second_turn, "content", "")


@dataclass
class Recording:
    """An interceptor answering from functions of the call, recording what it saw."""

    name: str = "recording"
    model_verdict: Callable[[ModelCall], Decision] = lambda call: Allow()
    tool_verdict: Callable[[ToolCall], Decision] = lambda call: Allow()
    seen: list[str] = field(default_factory=list)

    async def on_model_call(self, run_id: str, call: ModelCall) -> Decision:
        self.seen.append(f"model:{call.purpose}")
        return self.model_verdict(call)

    async def on_tool_call(self, run_id: str, call: ToolCall) -> Decision:
        self.seen.append(f"tool:{call.name}")
        return self.tool_verdict(call)


def bump_then_answer() -> Answer:
    return scripted(plan_of(("research", "bump")),
                    {"research": [use("bump", text="x"), text("done")]})


async def test_interceptors_that_allow_see_every_call_in_order(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, bump_then_answer())
    first, second = Recording(name="first"), Recording(name="second")
    h.interceptors = [first, second]

    assert await h.run() == "succeeded"

    expected = ["model:plan", "model:step", "tool:bump", "model:step", "model:synthesize"]
    assert first.seen == second.seen == expected
    assert CountingTool.runs == ["r-1/e0/s0/a0/t0/c0"]


async def test_a_denied_tool_call_is_not_made_and_the_model_is_told_why(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, bump_then_answer())
    after = Recording(name="after")
    h.interceptors = [Recording(name="policy", tool_verdict=lambda c: Deny("bumps are off")),
                      after]

    assert await h.run() == "succeeded"

    assert CountingTool.runs == []
    assert "tool:bump" not in after.seen  # the first answer other than allow decides
    told = h.model.calls("step")[1].messages[-1].content[0]
    assert getattr(told, "content", "") == "denied by policy: bumps are off"
    assert getattr(told, "is_error", False) is True


async def test_a_denied_model_call_fails_the_run_without_calling_the_model(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, bump_then_answer())
    h.interceptors = [Recording(
        name="policy",
        model_verdict=lambda c: Deny("no steps today") if c.purpose == "step" else Allow())]

    status = await h.run()

    run = await journal.get_run("r-1")
    assert status == "failed"
    assert run is not None and "denied by policy: no steps today" in (run.error or "")
    assert h.model.calls("step") == []  # and the denial was not retried as a step


async def test_a_substituted_tool_call_is_answered_and_recorded_without_running(
    tmp_path: Path, journal: Journal
) -> None:
    canned = ToolCallRecord(name="bump", arguments={"text": "x"}, ok=True,
                            output="dry run: would bump", duration_ms=0.0)
    h = harness(tmp_path, journal, bump_then_answer())
    h.interceptors = [Recording(name="dry-run", tool_verdict=lambda c: Substitute(canned))]

    assert await h.run() == "succeeded"

    assert CountingTool.runs == []
    effect = (await journal.effects("r-1"))["r-1/e0/s0/a0/t0/c0"]
    assert effect.record == canned


async def test_a_substituted_model_call_is_used_as_the_reply(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, bump_then_answer())
    h.interceptors = [Recording(
        name="cache",
        model_verdict=lambda c: Substitute("from the cache") if c.purpose == "synthesize"
        else Allow())]

    assert await h.run() == "succeeded"

    run = await journal.get_run("r-1")
    assert run is not None and run.result == "from the cache"
    assert h.model.calls("synthesize") == []


async def test_a_paused_call_waits_for_its_decision_with_the_run_awaiting_approval(
    tmp_path: Path, journal: Journal
) -> None:
    waiting, decided = anyio.Event(), anyio.Event()
    statuses: list[str | None] = []

    async def decide() -> Allow:
        statuses.append(await journal.run_status("r-1"))
        waiting.set()
        await decided.wait()
        return Allow()

    h = harness(tmp_path, journal, bump_then_answer())
    h.interceptors = [Recording(
        name="approvals",
        tool_verdict=lambda c: Pause("a bump needs a yes", decide))]

    async with anyio.create_task_group() as tg:
        results: list[str] = []

        async def run() -> None:
            results.append(await h.run())

        tg.start_soon(run)
        with anyio.fail_after(10):
            await waiting.wait()
        assert CountingTool.runs == []
        decided.set()

    assert statuses == ["awaiting_approval"]
    assert results == ["succeeded"]
    assert CountingTool.runs == ["r-1/e0/s0/a0/t0/c0"]


# -- model calls that fail --------------------------------------------------------------


def failing_plan(error: Exception) -> Answer:
    return lambda request: error if request.purpose == "plan" else text("unused")


async def test_a_rate_limited_call_is_retried_past_its_attempts_within_its_patience_then_fails(
    tmp_path: Path, journal: Journal
) -> None:
    # A 429 is the rate limiter's (rate_limit.py): sent again through it, not an attempt,
    # not a breaker failure; bounded by the patience from the first 429. One request at
    # t=0 is 60 rpm observed, halved to 30, one request let through after the retry-after;
    # its 429 halves it again, to 15: the third request could only go at 4 s, past it.
    error = ModelRateLimitedError("claude-haiku-4-5", "rate_limit_error: slow down",
                                  retry_after=0.01)
    h = harness(tmp_path, journal, failing_plan(error), models__attempts=1,
                models__patience_s=3.0, breaker__failure_threshold=1)
    context = h.context()
    h.context = lambda: context  # type: ignore[method-assign]  # to read its breaker

    with anyio.fail_after(10):
        status = await h.run()

    run = await journal.get_run("r-1")
    assert status == "failed"
    assert len(h.model.requests) == 2
    assert run is not None
    assert "failed after 1 attempt" in (run.error or "")
    assert "slow down" in (run.error or "")
    assert "still rate limited (HTTP 429) after the patience of 3 s" in (run.error or "")
    assert context.model_breakers["claude-haiku-4-5"].state == "closed"


async def test_a_refusal_no_retry_repairs_ends_the_run_after_one_request(
    tmp_path: Path, journal: Journal
) -> None:
    error = ModelRequestError("claude-haiku-4-5", "enforced_spend_limit_reached", status=429)
    h = harness(tmp_path, journal, failing_plan(error))

    status = await h.run()

    run = await journal.get_run("r-1")
    assert status == "failed"
    assert len(h.model.requests) == 1
    assert run is not None and "spend_limit" in (run.error or "")


async def test_a_retry_after_longer_than_the_patience_fails_at_once(
    tmp_path: Path, journal: Journal
) -> None:
    error = ModelRateLimitedError("claude-haiku-4-5", "busy", retry_after=5.0)
    h = harness(tmp_path, journal, failing_plan(error), models__patience_s=1.0,
                models__retry_after_cap_s=30.0)

    with anyio.fail_after(3):
        status = await h.run()

    assert status == "failed"
    assert len(h.model.requests) == 1


async def test_an_outage_shorter_than_the_patience_is_waited_out(
    tmp_path: Path, journal: Journal
) -> None:
    outage = iter([ModelUnavailableError("claude-haiku-4-5", "busy", status=503,
                                         retry_after=0.01)] * 2)
    plan = plan_of(("research", "look"))

    def answer(request: ModelRequest) -> ModelReply | Exception:
        if request.purpose == "plan":
            return next(outage, plan)
        return text("fine")

    h = harness(tmp_path, journal, answer)

    assert await h.run() == "succeeded"
    assert len(h.model.calls("plan")) == 3


async def test_the_model_endpoint_breaker_opens_and_fails_fast(
    tmp_path: Path, journal: Journal
) -> None:
    # A 503, not a 429: a 429 is a rate signal, which never opens the breaker.
    error = ModelUnavailableError("claude-haiku-4-5", "busy", status=503, retry_after=0.001)
    h = harness(tmp_path, journal, failing_plan(error), models__attempts=4,
                breaker__failure_threshold=2, breaker__cooldown_s=60.0,
                models__patience_s=1.0)
    context = h.context()
    h.context = lambda: context  # type: ignore[method-assign]  # one breaker for both runs

    assert await h.run("r-1") == "failed"
    assert len(h.model.requests) == 2  # the breaker opened after two failures
    assert await h.run("r-2") == "failed"

    assert len(h.model.requests) == 2  # open: the second run sent nothing
    run = await journal.get_run("r-2")
    assert run is not None and "circuit breaker 'model:claude-haiku-4-5' is open" in (
        run.error or "")
