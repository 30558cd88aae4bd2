"""The triad workload on autogen-core: a ``SingleThreadedAgentRuntime`` with a supervisor
agent and three worker agents (research, code, review), all ``RoutedAgent`` s.

``run_task`` sends the task to the supervisor with ``runtime.send_message``; the
supervisor makes the plan call, sends a step to each worker in order and awaits its reply,
makes the synthesis call and replies with the text and the tokens it summed from its own
calls and the workers' replies. The runtime handles every sent message in a task of its
own, so the N tasks of a run are all in flight at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    message_handler,
)

from bench.peers.asyncio_triad import plan_prompt, run_step, spent, synthesis_prompt
from bench.workload import ROLES, Tally, TaskResult, TriadModel

SUPERVISOR = AgentId("supervisor", "default")


@dataclass
class TaskMessage:
    task: int
    goal: str


@dataclass
class StepMessage:
    task: int
    goal: str
    earlier: list[str]


@dataclass
class Reply:
    text: str
    tokens: int


class Supervisor(RoutedAgent):
    """Plans a task, hands its steps to the workers in order, and writes the answer."""

    def __init__(self, model: TriadModel) -> None:
        super().__init__("the triad supervisor")
        self.model = model

    @message_handler
    async def on_task(self, message: TaskMessage, ctx: MessageContext) -> Reply:
        task, goal = message.task, message.goal
        tokens = spent(await self.model.complete(task, plan_prompt(goal)))
        outputs: list[str] = []
        for role in ROLES:
            reply = await self.send_message(StepMessage(task, goal, list(outputs)),
                                            AgentId(role, "default"),
                                            cancellation_token=ctx.cancellation_token)
            outputs.append(reply.text)
            tokens += reply.tokens
        final = await self.model.complete(task, synthesis_prompt(goal, outputs))
        return Reply(final.text, tokens + spent(final))


class Worker(RoutedAgent):
    """Does one role's step of a task: a model call for the tool, the tool, a model call."""

    def __init__(self, role: str, model: TriadModel) -> None:
        super().__init__(f"the triad {role} worker")
        self.role = role
        self.model = model

    @message_handler
    async def on_step(self, message: StepMessage, ctx: MessageContext) -> Reply:
        text, tokens = await run_step(self.model, message.task, self.role, message.goal,
                                      message.earlier)
        return Reply(text, tokens)


class AutogenTriad:
    """The running runtime and the model its agents share."""

    def __init__(self, runtime: SingleThreadedAgentRuntime, model: TriadModel) -> None:
        self.runtime = runtime
        self.model = model

    async def run_task(self, task: int, goal: str) -> TaskResult:
        reply = await self.runtime.send_message(TaskMessage(task, goal), SUPERVISOR)
        return TaskResult(reply.text, reply.tokens)

    async def tallies(self) -> dict[int, Tally]:
        return self.model.tallies


async def register_agents(runtime: SingleThreadedAgentRuntime, model: TriadModel) -> None:
    await Supervisor.register(runtime, SUPERVISOR.type, partial(Supervisor, model))
    for role in ROLES:
        await Worker.register(runtime, role, partial(Worker, role, model))


@asynccontextmanager
async def open_runtime(latency_ms: float, workdir: Path) -> AsyncIterator[AutogenTriad]:
    """Register the agents and start the runtime; close it on exit. ``workdir`` is unused."""
    model = TriadModel(latency_ms)
    runtime = SingleThreadedAgentRuntime()
    await register_agents(runtime, model)
    runtime.start()
    try:
        yield AutogenTriad(runtime, model)
    finally:
        await runtime.close()


def versions() -> dict[str, str]:
    return {"autogen-core": version("autogen-core")}
