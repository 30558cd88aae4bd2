"""The recording of a run and how two recordings differ (``supervisor/recording.py``):
where a call is, what was decided, and that the first divergence is the earliest."""

from __future__ import annotations

import msgspec
import pytest
from warden.supervisor.recording import (
    RecordedApproval,
    RecordedModelCall,
    RecordedRun,
    RecordedStep,
    RecordedToolCall,
    Recording,
    decision_of,
    divergences,
    location,
    position,
)

RUN = RecordedRun(id="r-1", text="do it", status="succeeded", result="done")


def model_call(key: str, **request: object) -> RecordedModelCall:
    body: dict[str, object] = {"model": "m", "role": "research", "messages": []} | request
    return RecordedModelCall(key=key, purpose="step", model="m", request=body, response=[])


def tool_call(key: str, *, ok: bool | None = True, output: str = "fine",
              **arguments: object) -> RecordedToolCall:
    return RecordedToolCall(key=key, step=0, tool="ledger_append", arguments=dict(arguments),
                            ok=ok, output=output)


def recording(**fields: object) -> Recording:
    values: dict[str, object] = {
        "run": RUN,
        "steps": [RecordedStep(index=0, role="research", instruction="i",
                               status="succeeded", output="ok")],
        "model_calls": [model_call("r-1/e0/plan/a0"), model_call("r-1/e0/s0/a0/t0"),
                        model_call("r-1/e0/s0/a0/t1"), model_call("r-1/e0/synth")],
        "tool_calls": [tool_call("r-1/e0/s0/a0/t0/c0", text="a")],
    } | fields
    return Recording(**values)  # type: ignore[arg-type]


def test_calls_are_ordered_plan_then_steps_by_attempt_turn_call_then_synthesis() -> None:
    keys = ["r-1/e0/synth", "r-1/e0/s1/a0/t0", "r-1/e0/s0/a1/t0", "r-1/e0/s0/a0/t1/c0",
            "r-1/e0/s0/a0/accept", "r-1/e0/s0/a0/t1", "r-1/e0/plan/a1", "r-1/e0/plan/a0",
            "r-1/e0/s0/a0/t10"]
    assert sorted(keys, key=position) == [
        "r-1/e0/plan/a0", "r-1/e0/plan/a1", "r-1/e0/s0/a0/t1", "r-1/e0/s0/a0/t1/c0",
        "r-1/e0/s0/a0/t10", "r-1/e0/s0/a0/accept", "r-1/e0/s0/a1/t0", "r-1/e0/s1/a0/t0",
        "r-1/e0/synth"]


@pytest.mark.parametrize(("key", "where"), [
    ("r-1/e0/plan/a1", "plan attempt 1"),
    ("r-1/e0/s2/a0/t3/c1", "step 2 attempt 0 turn 3 call 1"),
    ("r-1/e0/s0/a1/accept", "step 0 attempt 1 accepting the answer"),
    ("r-1/e0/synth", "synthesis"),
])
def test_a_location_names_the_call_for_a_person(key: str, where: str) -> None:
    assert location(key) == where


@pytest.mark.parametrize(("ok", "output", "decision"), [
    (True, "appended", "allowed"),
    (False, "exit 1: tests failed", "failed"),
    (False, "denied by policy.blocked_patterns: blocked pattern ...: not called",
     "refused by policy.blocked_patterns"),
    (False, "denied by approval: approval ap-1 denied by O...: no; not called",
     "refused by approval"),
    (False, "tool 'x' is not in the allowlist of role 'code': not called",
     "refused: not in the role's allowlist"),
    (False, "unknown tool 'x': not called", "refused: unknown tool"),
    (None, "", "no outcome"),
])
def test_the_decision_of_a_tool_call_is_read_from_its_outcome(
    ok: bool | None, output: str, decision: str
) -> None:
    assert decision_of(tool_call("k", ok=ok, output=output)) == decision


def test_a_recording_compared_with_itself_has_no_divergence() -> None:
    assert divergences(recording(), recording()) == []


def test_a_recording_survives_its_json_encoding_unchanged() -> None:
    original = recording(approvals=[RecordedApproval(
        id="ap-1", call_key="r-1/e0/s0/a0/t0/c0", step=0, tool="ledger_append",
        arguments={"text": "a"}, risk="medium", why="w", hash="h", status="approved")])
    decoded = msgspec.json.decode(msgspec.json.encode(original), type=Recording)
    assert decoded == original
    assert divergences(original, decoded) == []


def test_the_first_divergence_is_the_earliest_call_not_the_run_s_end() -> None:
    replayed = recording(
        run=msgspec.structs.replace(RUN, status="failed", result=None),
        model_calls=[model_call("r-1/e0/plan/a0"),
                     model_call("r-1/e0/s0/a0/t0", system="another prompt"),
                     model_call("r-1/e0/s0/a0/t1"), model_call("r-1/e0/synth")],
        tool_calls=[tool_call("r-1/e0/s0/a0/t0/c0", ok=False, text="a",
                              output="denied by policy.blocked_patterns: x: not called")],
    )
    first, second, *rest = divergences(recording(), replayed)
    assert (first.where, first.what) == ("step 0 attempt 0 turn 0",
                                         "step request (research) differs in 'system'")
    assert first.replayed == "another prompt"
    assert (second.where, second.recorded, second.replayed.split(" (")[0]) == (
        "step 0 attempt 0 turn 0 call 0", "allowed", "refused by policy.blocked_patterns")
    assert [(d.where, d.what) for d in rest] == [("run", "status"), ("run", "result")]


def test_calls_made_or_missing_only_on_one_side_are_divergences() -> None:
    replayed = recording(model_calls=recording().model_calls[:-1],
                         tool_calls=[*recording().tool_calls,
                                     tool_call("r-1/e0/s0/a0/t1/c0", text="b")])
    found = {(d.where, d.recorded, d.replayed) for d in divergences(recording(), replayed)}
    assert found == {("step 0 attempt 0 turn 1 call 0", "not made", "allowed"),
                     ("synthesis", "made", "not made")}


def test_an_approval_asked_only_in_the_replay_comes_before_the_decision_it_caused() -> None:
    key = "r-1/e0/s0/a0/t0/c0"
    replayed = recording(
        tool_calls=[tool_call(key, ok=False, text="a",
                              output="denied by approval: approval expired: ...")],
        approvals=[RecordedApproval(id="ap-1", call_key=key, step=0, tool="ledger_append",
                                    arguments={"text": "a"}, risk="medium",
                                    why="risk medium above auto_approve", hash="h",
                                    status="expired")])
    first, second = divergences(recording(), replayed)[:2]
    assert first.what == "approval of 'ledger_append'" and first.recorded == "not asked"
    assert second.what == "decision on 'ledger_append'"
