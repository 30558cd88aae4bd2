"""The fakes of the run logic's unit tests: a model answering from a function of the
request, test tools that count their own calls, settings, and a harness that runs one run
on the in-memory dispatcher against a real SQLite journal (no nats-server)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import anyio
import msgspec
from warden.actors.model import ModelReply, ModelRequest
from warden.actors.tools import Tool, ToolBase, ToolContext, ToolRegistry, default_registry
from warden.bus.wire import (
    Block,
    TextBlock,
    ToolUseBlock,
    Usage,
)
from warden.config import Settings, load_settings
from warden.supervisor.approvals import ApprovalBoard
from warden.supervisor.context import RunContext
from warden.supervisor.dispatch import InMemoryDispatcher
from warden.supervisor.journal import Journal
from warden.supervisor.run import RunSupervisor, state_of_new_run

Answer = Callable[[ModelRequest], ModelReply | Exception]
USAGE = Usage(input_tokens=100, output_tokens=20)



# -- the fakes --------------------------------------------------------------------------


@dataclass
class FakeModel:
    """Answers each call with ``answer(request)``; an exception it returns is raised."""

    answer: Answer
    requests: list[ModelRequest] = field(default_factory=list)

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        result = self.answer(request)
        if isinstance(result, Exception):
            raise result
        return result

    async def aclose(self) -> None:
        return None

    def calls(self, purpose: str) -> list[ModelRequest]:
        return [r for r in self.requests if r.purpose == purpose]


def reply(*blocks: Block, model: str = "claude-haiku-4-5") -> ModelReply:
    return ModelReply(content=list(blocks), stop_reason="end_turn", usage=USAGE, model=model)


def text(value: str) -> ModelReply:
    return reply(TextBlock(text=value))


def use(name: str, **arguments: object) -> ModelReply:
    return reply(ToolUseBlock(id=f"tu-{name}", name=name, input=dict(arguments)))


def plan_of(*steps: tuple[str, str]) -> ModelReply:
    return text(json.dumps({"steps": [{"role": r, "instruction": i} for r, i in steps]}))


def scripted(plan: ModelReply, turns: Mapping[str, list[ModelReply]],
             synthesis: str = "all done") -> Answer:
    """Plan, then each role's turns by turn number (the last repeats), then synthesis."""

    def answer(request: ModelRequest) -> ModelReply:
        if request.purpose == "plan":
            return plan
        if request.purpose == "synthesize":
            return text(synthesis)
        assert request.role is not None
        script = turns[request.role]
        turn = sum(1 for m in request.messages if m.role == "assistant")
        return script[min(turn, len(script) - 1)]

    return answer


class CountArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text: str = ""


class CountingTool(ToolBase[CountArgs]):
    """A test tool that counts its runs; a side effect that is not idempotent."""

    name = "bump"
    description = "Count one."
    side_effects = True
    idempotent_by_key = False
    Arguments = CountArgs
    runs: ClassVar[list[str]] = []

    async def run(self, args: CountArgs, ctx: ToolContext) -> str:
        CountingTool.runs.append(ctx.idempotency_key)
        return f"bumped {len(CountingTool.runs)}"


class FailingCheck(ToolBase[CountArgs]):
    """A check (like run_tests) whose verdict the test sets."""

    name = "verify"
    description = "Check the work."
    check = True
    Arguments = CountArgs
    passes: ClassVar[bool] = False

    async def run(self, args: CountArgs, ctx: ToolContext) -> str:
        from warden.actors.errors import ToolError

        if not FailingCheck.passes:
            raise ToolError(self.name, "1 failed: test_it")
        return "1 passed"


def registry() -> ToolRegistry:
    tools: list[Tool] = [*(default_registry().get(n) for n in default_registry().names()),
                         CountingTool(), FailingCheck()]
    return ToolRegistry(tools)


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[tuple[str, ...], object] = {
        ("data_dir",): str(tmp_path / "data"),
        ("models", "provider"): "scripted",
        ("models", "planner"): "claude-haiku-4-5",
        ("roles", "research", "model"): "claude-haiku-4-5",
        ("roles", "research", "tools"): ["list_files", "echo", "bump", "verify"],
        ("roles", "code", "model"): "claude-haiku-4-5",
        ("roles", "review", "model"): "claude-haiku-4-5",
        ("limits", "retry_base_s"): 0.001,
        ("limits", "retry_max_s"): 0.002,
    }
    for dotted, value in overrides.items():
        values[tuple(dotted.split("__"))] = value
    return load_settings(env={}, overrides=values)


@dataclass
class Harness:
    settings: Settings
    journal: Journal
    model: FakeModel
    tools: ToolRegistry
    tmp_path: Path
    interceptors: list[object] = field(default_factory=list)
    approvals: ApprovalBoard | None = None

    def context(self) -> RunContext:
        dispatcher = InMemoryDispatcher(self.settings, self.model, self.tools,
                                        data_dir=self.tmp_path / "data")
        return RunContext.build(self.settings, self.journal, dispatcher, self.tools,
                                interceptors=self.interceptors,  # type: ignore[arg-type]
                                approvals=self.approvals)

    async def run(self, run_id: str = "r-1", *, text: str = "do the thing",
                  budget_usd: float | None = None) -> str:
        await self.journal.create_run(run_id, text=text, status="queued",
                                      budget_usd=budget_usd)
        state = state_of_new_run(run_id, text, None, budget_usd)
        with anyio.fail_after(30):
            return await RunSupervisor(self.context(), state).run()


def harness(tmp_path: Path, journal: Journal, answer: Answer, **overrides: object) -> Harness:
    CountingTool.runs = []
    FailingCheck.passes = False
    return Harness(settings_for(tmp_path, **overrides), journal, FakeModel(answer), registry(),
                   tmp_path)
