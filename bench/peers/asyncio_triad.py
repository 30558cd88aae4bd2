"""The triad workload on plain asyncio: the floor the agent runtimes are measured against.

Four agents, each an asyncio task reading its own ``asyncio.Queue`` mailbox: a
supervisor, which takes every submitted task, and three long-lived workers (research,
code, review). An agent handles each message in a task of its own, as actor runtimes do,
so N tasks run at once; a request carries a future on which the agent replies.

The prompt builders and ``run_step`` (one worker step) live here and are imported by the
LangGraph and autogen-core modules, so every peer sends the model the same prompts.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.workload import ROLES, TOOL_NAME, ModelAnswer, Tally, TaskResult, TriadModel

PLAN_SYSTEM = ("You are the supervisor. Plan how the research, code and review workers "
               "will reach the goal, one step each.")
SYNTHESIS_SYSTEM = "You are the supervisor. Write the final answer from the workers' outputs."
ROLE_SYSTEM = {
    "research": "You are the research worker. You investigate and report what you find.",
    "code": "You are the code worker. You write and change code.",
    "review": "You are the review worker. You check the work for mistakes.",
}
STEP_INSTRUCTION = {
    "research": "Your step: find out what the goal needs. Use the tool.",
    "code": "Your step: make the change the goal asks for. Use the tool.",
    "review": "Your step: review the change and say whether it is right. Use the tool.",
}


def plan_prompt(goal: str) -> str:
    return f"{PLAN_SYSTEM}\n\nGoal: {goal}"


def step_prompt(role: str, goal: str, earlier: Sequence[str]) -> str:
    done = "".join(f"\n\nEarlier step output:\n{text}" for text in earlier)
    return f"{ROLE_SYSTEM[role]}\n\nGoal: {goal}\n\n{STEP_INSTRUCTION[role]}{done}"


def tool_result_prompt(prompt: str, reply: ModelAnswer, output: str) -> str:
    return f"{prompt}\n\nAssistant: {reply.text}\n\nTool {reply.tool} returned:\n{output}"


def synthesis_prompt(goal: str, outputs: Sequence[str]) -> str:
    steps = "".join(f"\n\n{role} output:\n{text}" for role, text in zip(ROLES, outputs,
                                                                         strict=True))
    return f"{SYNTHESIS_SYSTEM}\n\nGoal: {goal}{steps}"


def spent(answer: ModelAnswer) -> int:
    """The tokens one model call reports."""
    return answer.prompt_tokens + answer.completion_tokens


async def run_step(model: TriadModel, task: int, role: str, goal: str,
                   earlier: Sequence[str]) -> tuple[str, int]:
    """One worker step: a model call that asks for the tool, the tool, a model call that
    returns the step's text. Returns that text and the tokens the two calls reported."""
    prompt = step_prompt(role, goal, earlier)
    first = await model.complete(task, prompt, want_tool=True)
    if first.tool != TOOL_NAME:
        raise ValueError(f"the model asked for an unknown tool {first.tool!r}")
    output = model.tool(task)
    second = await model.complete(task, tool_result_prompt(prompt, first, output))
    return second.text, spent(first) + spent(second)


@dataclass(frozen=True, slots=True)
class TaskMessage:
    task: int
    goal: str


@dataclass(frozen=True, slots=True)
class StepMessage:
    task: int
    goal: str
    earlier: tuple[str, ...]


class Agent:
    """An actor: a mailbox, and a loop that handles each message in a task of its own and
    replies on the future that came with it."""

    def __init__(self, handle: Callable[[Any], Awaitable[Any]]) -> None:
        self.handle = handle
        self.mailbox: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()

    async def ask(self, message: Any) -> Any:
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.mailbox.put_nowait((message, reply))
        return await reply

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            while True:
                message, reply = await self.mailbox.get()
                group.create_task(self._serve(message, reply))

    async def _serve(self, message: Any, reply: asyncio.Future[Any]) -> None:
        try:
            result = await self.handle(message)
        except Exception as exc:
            if not reply.done():
                reply.set_exception(exc)
        else:
            if not reply.done():
                reply.set_result(result)


class AsyncioTriad:
    """The supervisor and the three workers, wired to one model."""

    def __init__(self, model: TriadModel) -> None:
        self.model = model
        self.supervisor = Agent(self._supervise)
        self.workers = {role: Agent(self._worker(role)) for role in ROLES}

    def agents(self) -> list[Agent]:
        return [self.supervisor, *self.workers.values()]

    def _worker(self, role: str) -> Callable[[StepMessage], Awaitable[tuple[str, int]]]:
        async def step(message: StepMessage) -> tuple[str, int]:
            return await run_step(self.model, message.task, role, message.goal, message.earlier)
        return step

    async def _supervise(self, message: TaskMessage) -> TaskResult:
        task, goal = message.task, message.goal
        tokens = spent(await self.model.complete(task, plan_prompt(goal)))
        outputs: list[str] = []
        for role in ROLES:
            text, used = await self.workers[role].ask(StepMessage(task, goal, tuple(outputs)))
            outputs.append(text)
            tokens += used
        final = await self.model.complete(task, synthesis_prompt(goal, outputs))
        return TaskResult(final.text, tokens + spent(final))

    async def run_task(self, task: int, goal: str) -> TaskResult:
        return await self.supervisor.ask(TaskMessage(task, goal))

    async def tallies(self) -> dict[int, Tally]:
        return self.model.tallies


@asynccontextmanager
async def open_runtime(latency_ms: float, workdir: Path) -> AsyncIterator[AsyncioTriad]:
    """Start the four agents; stop them on exit. ``workdir`` is unused (nothing on disk)."""
    triad = AsyncioTriad(TriadModel(latency_ms))
    loops = [asyncio.create_task(agent.run()) for agent in triad.agents()]
    try:
        yield triad
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)


def versions() -> dict[str, str]:
    return {"python": platform.python_version()}
