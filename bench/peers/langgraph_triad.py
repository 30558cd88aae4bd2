"""The triad workload on LangGraph: a ``StateGraph`` plan → research → code → review →
synthesize, run with ``ainvoke`` once per task.

Each worker node makes the model call that asks for the tool, runs the tool and makes the
model call that returns the step's text; the step outputs and the tokens every call
reports accumulate in the graph's state through reducers. ``open_runtime`` compiles the
graph without a checkpointer; ``open_sqlite_runtime`` compiles it with
``AsyncSqliteSaver`` on a SQLite file in ``workdir``, one thread per task.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Protocol, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from bench.peers.asyncio_triad import plan_prompt, run_step, spent, synthesis_prompt
from bench.workload import ROLES, Tally, TaskResult, TriadModel


class TriadState(TypedDict, total=False):
    task: int
    goal: str
    outputs: Annotated[list[str], operator.add]
    tokens: Annotated[int, operator.add]
    text: str


class Node(Protocol):
    async def __call__(self, state: TriadState) -> dict[str, Any]: ...


def plan_node(model: TriadModel) -> Node:
    async def plan(state: TriadState) -> dict[str, Any]:
        answer = await model.complete(state["task"], plan_prompt(state["goal"]))
        return {"tokens": spent(answer)}
    return plan


def worker_node(model: TriadModel, role: str) -> Node:
    async def step(state: TriadState) -> dict[str, Any]:
        text, tokens = await run_step(model, state["task"], role, state["goal"],
                                      state["outputs"])
        return {"outputs": [text], "tokens": tokens}
    return step


def synthesize_node(model: TriadModel) -> Node:
    async def synthesize(state: TriadState) -> dict[str, Any]:
        answer = await model.complete(state["task"],
                                      synthesis_prompt(state["goal"], state["outputs"]))
        return {"text": answer.text, "tokens": spent(answer)}
    return synthesize


def build_graph(model: TriadModel) -> StateGraph:
    graph = StateGraph(TriadState)
    graph.add_node("plan", plan_node(model))
    for role in ROLES:
        graph.add_node(role, worker_node(model, role))
    graph.add_node("synthesize", synthesize_node(model))
    for source, target in pairwise([START, "plan", *ROLES, "synthesize", END]):
        graph.add_edge(source, target)
    return graph


class LangGraphTriad:
    """The compiled graph and its model; with a checkpointer, each task is its own thread."""

    def __init__(self, model: TriadModel, checkpointer: BaseCheckpointSaver | None) -> None:
        self.model = model
        self.graph: CompiledStateGraph = build_graph(model).compile(checkpointer=checkpointer)
        self.threaded = checkpointer is not None

    async def run_task(self, task: int, goal: str) -> TaskResult:
        config = RunnableConfig(configurable={"thread_id": str(task)}) if self.threaded else None
        state = await self.graph.ainvoke({"task": task, "goal": goal}, config)
        return TaskResult(state["text"], state["tokens"])

    async def tallies(self) -> dict[int, Tally]:
        return self.model.tallies


@asynccontextmanager
async def open_runtime(latency_ms: float, workdir: Path) -> AsyncIterator[LangGraphTriad]:
    """The graph without a checkpointer; ``workdir`` is unused (nothing on disk)."""
    yield LangGraphTriad(TriadModel(latency_ms), None)


@asynccontextmanager
async def open_sqlite_runtime(latency_ms: float,
                              workdir: Path) -> AsyncIterator[LangGraphTriad]:
    """The graph checkpointed by ``AsyncSqliteSaver`` to ``workdir/checkpoints.sqlite``."""
    async with AsyncSqliteSaver.from_conn_string(str(workdir / "checkpoints.sqlite")) as saver:
        await saver.setup()
        yield LangGraphTriad(TriadModel(latency_ms), saver)


def versions() -> dict[str, str]:
    return {name: version(name) for name in
            ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "aiosqlite")}
