"""The scripted model: deterministic, offline, with a configurable latency.

It serves the ``Model`` protocol from scripts (TOML) so that warden runs end to end with
no API key: the default model when ``ANTHROPIC_API_KEY`` is unset, and the model of tests
and benchmarks. A script names scenarios; each scenario has a plan, the turns of each
role, and a synthesis::

    [scenario.fizzbuzz]
    match = "(?i)fizz ?buzz"            # picked for task texts matching this
    synthesis = "Done: ..."
    [[scenario.fizzbuzz.plan]]
    role = "code"
    instruction = "Write fizzbuzz.py ..."
    [[scenario.fizzbuzz.turns.code]]   # turn 0 of a code step: tool calls
    tools = [{ name = "write_file", input = { path = "a.py", content = "..." } }]
    [[scenario.fizzbuzz.turns.code]]   # turn 1: the step's answer
    text = "Wrote a.py; {last_result}"

The turn of a step is the number of assistant messages already in the conversation; past
the last scripted turn the last one repeats (so a scenario whose only turn is a tool call
loops forever, which is how tests make a runaway worker). ``{last_result}`` in a text is
replaced by the first line of the latest tool result, so a scripted reviewer reports what
the real test run said. ``plan_texts`` instead of ``plan`` gives raw plan replies, one per
attempt, to script invalid plans. The scenario is the request's ``scenario`` hint when
given, else the first whose ``match`` finds the task text, else ``default``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
from warden.actors.errors import ModelDeadlineError, ScriptError
from warden.actors.model import ModelReply, ModelRequest
from warden.bus.wire import Block, Message, TextBlock, ToolResultBlock, ToolUseBlock, Usage


class ScriptedToolCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    input: dict[str, object] = {}


class ScriptedTurn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str | None = None
    tool: str | None = None
    input: dict[str, object] = {}
    tools: list[ScriptedToolCall] = []

    def calls(self) -> list[ScriptedToolCall]:
        single = [ScriptedToolCall(name=self.tool, input=self.input)] if self.tool else []
        return single + list(self.tools)


class ScriptedStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str
    instruction: str


class Scenario(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    match: str | None = None
    plan: list[ScriptedStep] = []
    plan_texts: list[str] = []
    turns: dict[str, list[ScriptedTurn]] = {}
    synthesis: str = "Done."
    completion_tokens: int | None = None
    """Output tokens every reply reports; ``None``: characters of the reply // 4."""


class Script(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    scenario: dict[str, Scenario]


def load_scripts(extra_files: Sequence[str] = ()) -> dict[str, Scenario]:
    """Scenarios from ``extra_files`` (first wins) and then the bundled scripts.

    Raises ``ScriptError`` naming the file and the problem.
    """
    scenarios: dict[str, Scenario] = {}
    sources: list[tuple[str, str]] = []
    for name in extra_files:
        try:
            sources.append((name, Path(name).read_text(encoding="utf-8")))
        except OSError as exc:
            raise ScriptError(name, f"cannot be read: {exc.strerror}") from exc
    bundled = resources.files("warden.actors").joinpath("scripts")
    for entry in sorted(bundled.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            sources.append((f"actors/scripts/{entry.name}", entry.read_text(encoding="utf-8")))
    for source, text in sources:
        try:
            script = msgspec.convert(tomllib.loads(text), Script)
        except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise ScriptError(source, str(exc)) from exc
        for key, scenario in script.scenario.items():
            scenarios.setdefault(key, scenario)
    if "default" not in scenarios:
        raise ScriptError("actors/scripts", "no scenario named 'default'")
    return scenarios


def _first_user_text(messages: Sequence[Message]) -> str:
    for message in messages:
        if message.role == "user":
            return "".join(b.text for b in message.content if isinstance(b, TextBlock))
    return ""


def _last_tool_result(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        for block in reversed(message.content):
            if isinstance(block, ToolResultBlock):
                return block.content.splitlines()[0] if block.content else ""
    return ""


def _prompt_chars(request: ModelRequest) -> int:
    size = len(request.system)
    for message in request.messages:
        for block in message.content:
            match block:
                case TextBlock(text=text):
                    size += len(text)
                case ToolResultBlock(content=content):
                    size += len(content)
                case ToolUseBlock(name=name, input=arguments):
                    size += len(name) + len(msgspec.json.encode(arguments))
    return size


class ScriptedModel:
    """A ``Model`` that answers from scripts; deterministic for a given request.

    Tokens: prompt = characters of the prompt // 4, completion = characters of the reply
    // 4 or the scenario's ``completion_tokens`` (at least 1, at most the request's
    ``max_tokens``). ``complete`` sleeps
    ``latency_ms`` (or just yields at 0) and is a
    cancellation point; it raises nothing but ``ScriptError`` for a broken script.
    """

    provider = "warden.scripted"
    """``gen_ai.provider.name`` of its calls' spans (not a provider the conventions list)."""

    def __init__(
        self, *, latency_ms: float = 0.0, scenarios: dict[str, Scenario] | None = None
    ) -> None:
        self._latency_s = latency_ms / 1000.0
        self._scenarios = scenarios if scenarios is not None else load_scripts()
        self._matchers = [
            (re.compile(s.match), name) for name, s in self._scenarios.items() if s.match
        ]
        self.calls = 0

    def scenario_for(self, hint: str | None, task_text: str) -> Scenario:
        """The scenario named ``hint``, else the first matching ``task_text``, else default."""
        if hint is not None and hint in self._scenarios:
            return self._scenarios[hint]
        for pattern, name in self._matchers:
            if pattern.search(task_text):
                return self._scenarios[name]
        return self._scenarios["default"]

    def scenario_names(self) -> list[str]:
        return sorted(self._scenarios)

    async def complete(self, request: ModelRequest) -> ModelReply:
        deadline = request.deadline_s
        if deadline is not None and self._latency_s > deadline:
            await anyio.sleep(deadline)  # a real call would be abandoned there
            raise ModelDeadlineError(request.model, deadline)
        if self._latency_s > 0:
            await anyio.sleep(self._latency_s)
        else:
            await anyio.lowlevel.checkpoint()
        self.calls += 1
        scenario = self.scenario_for(request.scenario, _first_user_text(request.messages))
        turn = sum(1 for m in request.messages if m.role == "assistant")
        content: list[Block]
        if request.purpose == "plan":
            content = [TextBlock(text=self._plan_text(scenario, turn))]
        elif request.purpose == "synthesize":
            content = [TextBlock(text=scenario.synthesis)]
        else:
            content = self._step_content(scenario, request, turn)
        stop = "tool_use" if any(isinstance(b, ToolUseBlock) for b in content) else "end_turn"
        out_chars = sum(
            len(b.text) if isinstance(b, TextBlock) else len(msgspec.json.encode(b))
            for b in content
        )
        # Like a real model, it never reports more output than the request allowed.
        wanted = scenario.completion_tokens or max(1, out_chars // 4)
        output_tokens = min(request.max_tokens, wanted)
        usage = Usage(input_tokens=_prompt_chars(request) // 4, output_tokens=output_tokens)
        return ModelReply(
            content=content,
            stop_reason=stop,
            usage=usage,
            model=request.model,
            latency_ms=self._latency_s * 1000.0,
        )

    @staticmethod
    def _plan_text(scenario: Scenario, attempt: int) -> str:
        if scenario.plan_texts:
            return scenario.plan_texts[min(attempt, len(scenario.plan_texts) - 1)]
        steps = [{"role": s.role, "instruction": s.instruction} for s in scenario.plan]
        return msgspec.json.encode({"steps": steps}).decode()

    @staticmethod
    def _step_content(scenario: Scenario, request: ModelRequest, turn: int) -> list[Block]:
        turns = scenario.turns.get(request.role or "", [])
        if not turns:
            return [TextBlock(text=f"{request.role} step done.")]
        scripted = turns[min(turn, len(turns) - 1)]
        content: list[Block] = []
        if scripted.text is not None:
            last = _last_tool_result(request.messages)
            content.append(TextBlock(text=scripted.text.replace("{last_result}", last)))
        for index, call in enumerate(scripted.calls()):
            content.append(
                ToolUseBlock(id=f"toolu_{turn:03d}_{index:02d}", name=call.name, input=call.input)
            )
        return content

    async def aclose(self) -> None:
        return None
