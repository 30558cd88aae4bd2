"""The scripted model: deterministic turns from scripts, honest token counts."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest
from warden.actors.errors import ModelDeadlineError, ScriptError
from warden.actors.model import ModelRequest
from warden.actors.scripted_model import ScriptedModel, load_scripts
from warden.bus.wire import Message, TextBlock, ToolResultBlock, ToolUseBlock

pytestmark = pytest.mark.anyio


def _request(purpose: str, text: str, *, role: str | None = None,
             history: list[Message] | None = None, scenario: str | None = None,
             max_tokens: int = 2048) -> ModelRequest:
    messages = [Message(role="user", content=[TextBlock(text=text)]), *(history or [])]
    return ModelRequest(model="claude-haiku-4-5", system="sys", messages=messages,
                        max_tokens=max_tokens, purpose=purpose, role=role,  # type: ignore[arg-type]
                        scenario=scenario)


async def test_plan_of_a_matching_scenario_is_valid_json_naming_roles() -> None:
    model = ScriptedModel()
    reply = await model.complete(_request("plan", "Task: write fizzbuzz please"))
    plan = msgspec.json.decode(reply.text)
    assert [s["role"] for s in plan["steps"]] == ["research", "code", "review"]
    assert reply.stop_reason == "end_turn"


async def test_any_other_task_text_gets_the_default_scenario() -> None:
    model = ScriptedModel()
    plan = msgspec.json.decode((await model.complete(_request("plan", "Task: tidy up"))).text)
    assert plan["steps"][1]["instruction"].startswith("Write solution.py")


async def test_step_turns_follow_the_script_then_the_last_turn_repeats() -> None:
    model = ScriptedModel()
    first = await model.complete(_request("step", "Task: fizzbuzz", role="code"))
    assert first.stop_reason == "tool_use"
    assert [b.name for b in first.content if isinstance(b, ToolUseBlock)] == [
        "write_file", "write_file"]
    history = [Message(role="assistant", content=first.content),
               Message(role="user", content=[ToolResultBlock(tool_use_id="x", content="ok")])] * 3
    late = await model.complete(_request("step", "Task: fizzbuzz", role="code", history=history))
    assert late.stop_reason == "end_turn"
    assert late.text.startswith("Wrote fizzbuzz.py")


async def test_last_result_placeholder_reports_the_real_tool_output() -> None:
    model = ScriptedModel()
    history = [
        Message(role="assistant", content=[ToolUseBlock(id="t1", name="run_tests", input={})]),
        Message(role="user", content=[ToolResultBlock(tool_use_id="t1", content="FAIL\n1 failed")]),
    ]
    reply = await model.complete(_request("step", "Task: fizzbuzz", role="review", history=history))
    assert reply.text.startswith("FAIL:")


async def test_same_request_gives_the_same_reply_and_tokens_follow_the_text() -> None:
    model = ScriptedModel()
    a = await model.complete(_request("step", "Task: slugify", role="code"))
    b = await model.complete(_request("step", "Task: slugify", role="code"))
    assert a == b
    assert a.usage.input_tokens == (len("sys") + len("Task: slugify")) // 4
    assert a.usage.output_tokens > 100
    capped = await model.complete(_request("step", "Task: slugify", role="code", max_tokens=10))
    assert capped.usage.output_tokens == 10


async def test_scenario_hint_wins_over_text_matching() -> None:
    model = ScriptedModel()
    reply = await model.complete(_request("plan", "Task: fizzbuzz", scenario="slugify"))
    assert [s["role"] for s in msgspec.json.decode(reply.text)["steps"]] == ["code", "review"]


async def test_latency_is_applied_on_anyios_clock() -> None:
    model = ScriptedModel(latency_ms=50)
    started = anyio.current_time()
    await model.complete(_request("plan", "x"))
    assert anyio.current_time() - started >= 0.05


async def test_a_latency_past_the_deadline_ends_the_call_at_the_deadline() -> None:
    model = ScriptedModel(latency_ms=10_000)
    started = anyio.current_time()
    with pytest.raises(ModelDeadlineError) as caught:
        await model.complete(msgspec.structs.replace(_request("plan", "x"), deadline_s=0.05))
    waited = anyio.current_time() - started
    assert 0.05 <= waited < 5.0
    assert caught.value.retryable and "deadline of 0.05 s" in str(caught.value)
    assert model.calls == 0


def test_extra_script_files_come_first_and_bad_ones_name_the_file(tmp_path: Path) -> None:
    extra = tmp_path / "mine.toml"
    extra.write_text('[scenario.fizzbuzz]\nsynthesis = "mine"\n')
    assert load_scripts([str(extra)])["fizzbuzz"].synthesis == "mine"
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario.x]\nunknown_field = 1\n')
    with pytest.raises(ScriptError, match=r"bad\.toml"):
        load_scripts([str(bad)])


async def test_a_scenario_can_fix_the_completion_tokens_of_every_reply(tmp_path: Path) -> None:
    script = tmp_path / "fixed.toml"
    script.write_text(
        '[scenario.fixed]\nsynthesis = "short"\ncompletion_tokens = 125\n'
        '[[scenario.fixed.plan]]\nrole = "code"\ninstruction = "x"\n'
        '[[scenario.fixed.turns.code]]\ntool = "echo"\ninput = { text = "t" }\n',
        encoding="utf-8")
    model = ScriptedModel(scenarios=load_scripts([str(script)]))
    replies = [await model.complete(_request(purpose, "task", role="code", scenario="fixed"))
               for purpose in ("plan", "step", "synthesize")]
    assert [r.usage.output_tokens for r in replies] == [125, 125, 125]
    capped = await model.complete(_request("synthesize", "t", scenario="fixed", max_tokens=50))
    assert capped.usage.output_tokens == 50  # never more than the request allowed
