"""The "triad" workload, the same for every runtime measured in ``bench/``.

One task = 1 planning model call; then 3 steps in order (research, code, review), each
handed to that role's worker, which makes 1 model call that asks for a tool, runs the
tool (a no-op returning ``TOOL_OUTPUT``), and makes 1 model call that returns the step's
text; then 1 synthesis call. Per task: 8 model calls and 3 tool calls; the critical path
is 8 sequential model calls, so the ideal latency is 8 x L.

Every model reply text is ``REPLY_TEXT`` (500 bytes), every call reports
``COMPLETION_TOKENS`` completion tokens and ``len(prompt) // 4`` prompt tokens, and the
task input is ``GOAL`` (100 bytes). ``TriadModel`` and ``noop_tool`` are the model and
the tool of the peer runtimes (warden uses its own scripted model, scenario ``triad``,
which follows the same rules); each keeps a tally per task, against which a runtime's
own report of the task is checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

ROLES = ("research", "code", "review")
MODEL_CALLS_PER_TASK = 8
TOOL_CALLS_PER_TASK = 3
COMPLETION_TOKENS = 125
TOOL_NAME = "noop"

GOAL = ("Find out how the parser handles unicode, patch the bug, and review the patch. "
        "Keep it brief.").ljust(100, ".")
REPLY_TEXT = ("Done. " + "The step went as planned and produced what was asked. " * 10).ljust(
    500, ".")[:500]
TOOL_OUTPUT = ("noop tool output: " + "0123456789" * 20)[:200]

assert len(GOAL) == 100 and len(REPLY_TEXT) == 500 and len(TOOL_OUTPUT) == 200


def prompt_tokens(prompt: str) -> int:
    """The prompt tokens the scripted model charges for ``prompt``."""
    return len(prompt) // 4


@dataclass
class Tally:
    """What the model and the tool saw of one task: the reference a runtime is checked on."""

    model_calls: int = 0
    tool_calls: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class ModelAnswer:
    text: str
    tool: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class TaskResult:
    """What a runtime reports of a finished task."""

    text: str
    tokens: int


@dataclass
class TriadModel:
    """The scripted model of the peer runtimes: waits ``latency_ms`` (a bare yield at 0),
    then answers ``REPLY_TEXT``, asking for ``TOOL_NAME`` when ``want_tool``."""

    latency_ms: float
    tallies: dict[int, Tally] = field(default_factory=dict)

    async def complete(self, task: int, prompt: str, *, want_tool: bool = False) -> ModelAnswer:
        await asyncio.sleep(self.latency_ms / 1000.0)
        tally = self.tallies.setdefault(task, Tally())
        tally.model_calls += 1
        used = prompt_tokens(prompt)
        tally.tokens += used + COMPLETION_TOKENS
        return ModelAnswer(REPLY_TEXT, TOOL_NAME if want_tool else None, used, COMPLETION_TOKENS)

    def tool(self, task: int) -> str:
        """The no-op tool: counted, and returns ``TOOL_OUTPUT``."""
        self.tallies.setdefault(task, Tally()).tool_calls += 1
        return TOOL_OUTPUT


def check(results: dict[int, TaskResult], tallies: dict[int, Tally], n: int) -> str | None:
    """None when all ``n`` tasks finished right, else what is wrong (the first problem)."""
    if len(results) != n:
        return f"{len(results)} of {n} tasks finished"
    model_calls = sum(t.model_calls for t in tallies.values())
    tool_calls = sum(t.tool_calls for t in tallies.values())
    if model_calls != MODEL_CALLS_PER_TASK * n:
        return f"{model_calls} model calls, not {MODEL_CALLS_PER_TASK * n}"
    if tool_calls != TOOL_CALLS_PER_TASK * n:
        return f"{tool_calls} tool calls, not {TOOL_CALLS_PER_TASK * n}"
    for task, result in results.items():
        if result.text != REPLY_TEXT:
            return f"task {task}: final text {result.text[:60]!r} is not the synthesis reply"
        tally = tallies.get(task, Tally())
        if result.tokens != tally.tokens or tally.model_calls != MODEL_CALLS_PER_TASK:
            return (f"task {task}: reported {result.tokens} tokens; the model counted "
                    f"{tally.tokens} in {tally.model_calls} calls")
    return None
