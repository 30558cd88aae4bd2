"""The replay's recorded dispatcher and its rules (``supervisor/replay.py``): calls are
answered from the recording under the keys the run supervisor makes, nothing is executed,
a call never recorded is answered and reported, and only ended, never-resumed runs are
replayed."""

from __future__ import annotations

import re

import msgspec
import pytest
from warden.bus.wire import TextBlock, ToolRequest, TurnRequest
from warden.supervisor.errors import ReplayError
from warden.supervisor.recording import (
    RecordedModelCall,
    RecordedRun,
    RecordedToolCall,
    Recording,
)
from warden.supervisor.replay import RecordedDispatcher, replayable

pytestmark = pytest.mark.anyio

RUN = RecordedRun(id="r-1", text="t", status="succeeded")


def answer(key: str, text: str) -> RecordedModelCall:
    return RecordedModelCall(key=key, purpose="step", model="m", request={},
                             response=[{"type": "text", "text": text}], input_tokens=7)


def turn(purpose: str, step: int = -1, turn: int = -1) -> TurnRequest:
    return TurnRequest(run_id="r-1", step=step, turn=turn, role="research", max_tokens=10,
                       messages=[], model="m", system="", tools=msgspec.Raw(b"[]"),
                       purpose=purpose)  # type: ignore[arg-type]


async def test_model_calls_are_answered_by_the_key_the_run_supervisor_makes() -> None:
    dispatcher = RecordedDispatcher(Recording(run=RUN, model_calls=[
        answer("r-1/e0/plan/a0", "plan 0"), answer("r-1/e0/plan/a1", "plan 1"),
        answer("r-1/e0/s0/a0/t0", "a0 t0"), answer("r-1/e0/s0/a0/t1", "a0 t1"),
        answer("r-1/e0/s0/a1/t0", "a1 t0"), answer("r-1/e0/synth", "synth"),
    ]))
    requests = [turn("plan"), turn("plan"), turn("step", 0, 0), turn("step", 0, 1),
                turn("step", 0, 0), turn("synthesize")]
    texts = []
    for request in requests:
        reply = await dispatcher.model(request, wait_s=1.0)
        assert reply.assistant is not None and reply.usage.input_tokens == 7
        block = reply.assistant.content[0]
        assert isinstance(block, TextBlock)
        texts.append(block.text)
    assert texts == ["plan 0", "plan 1", "a0 t0", "a0 t1", "a1 t0", "synth"]
    assert dispatcher.unrecorded == []


async def test_a_call_never_recorded_is_answered_without_acting_and_reported() -> None:
    dispatcher = RecordedDispatcher(Recording(run=RUN))
    reply = await dispatcher.model(turn("step", 2, 0), wait_s=1.0)
    assert reply.error is not None and not reply.retryable
    tool = await dispatcher.tool(ToolRequest(
        run_id="r-1", step=2, role="code", call_index=0, name="write_file",
        arguments={"path": "x"}, idempotency_key="r-1/e0/s2/a0/t0/c0"), wait_s=1.0)
    assert tool.record is not None and not tool.record.ok
    assert "not executed" in tool.record.output
    assert [(d.where, d.replayed.split(" (")[0]) for d in dispatcher.unrecorded] == [
        ("step 2 attempt 0 turn 0", "made"), ("step 2 attempt 0 turn 0 call 0", "made")]


async def test_a_recorded_tool_outcome_is_returned_for_the_call_as_the_replay_made_it() -> None:
    key = "r-1/e0/s0/a0/t0/c0"
    dispatcher = RecordedDispatcher(Recording(run=RUN, tool_calls=[RecordedToolCall(
        key=key, step=0, tool="ledger_append", arguments={"text": "a"}, ok=True,
        output="appended")]))
    reply = await dispatcher.tool(ToolRequest(
        run_id="r-1", step=0, role="research", call_index=0, name="ledger_append",
        arguments={"text": "b"}, idempotency_key=key), wait_s=1.0)
    assert reply.record is not None
    assert (reply.record.ok, reply.record.output, reply.record.arguments) == (
        True, "appended", {"text": "b"})


@pytest.mark.parametrize(("status", "epoch", "problem"), [
    ("running", 0, "it has not ended (it is running)"),
    ("awaiting_approval", 0, "it has not ended"),
    ("failed", 1, "it was resumed (epoch 1)"),
])
def test_only_a_run_that_ended_and_was_never_resumed_is_replayed(
    status: str, epoch: int, problem: str
) -> None:
    run = msgspec.structs.replace(RUN, status=status, epoch=epoch)
    with pytest.raises(ReplayError, match=re.escape(f"cannot replay run 'r-1': {problem}")):
        replayable(Recording(run=run))
    replayable(Recording(run=RUN))
