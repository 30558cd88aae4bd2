"""Planning: the planner's and the synthesis call's prompts, and what a valid plan is.

A plan is the planner model's reply, JSON only: ``{"steps": [{"role", "instruction"}]}``.
``validate_plan`` is a pure function of the text and the settings: it returns the plan
or raises ``ValueError`` saying, in words the model is shown on the next attempt, what is
wrong (not JSON, no steps, more than ``max_steps_per_run``, an unknown role, an empty
instruction).
"""

from __future__ import annotations

import msgspec
from warden.bus.wire import Block, Message, TextBlock
from warden.config import Settings

__all__ = (
    "PLAN_SYSTEM",
    "SYNTH_SYSTEM",
    "Plan",
    "PlanStep",
    "plan_messages",
    "plan_system",
    "retry_plan_messages",
    "step_prompt",
    "synthesis_messages",
    "validate_plan",
)

PLAN_SYSTEM = (
    "You are the planner of a small software team with these workers: {roles}. "
    "Break the task into at most {max_steps} steps, each handed to one worker. Reply with "
    'JSON only, exactly: {{"steps": [{{"role": "<worker>", "instruction": "<what to do>"}}]}}'
)
SYNTH_SYSTEM = (
    "You are the lead of a small software team. Given the task and what each step "
    "produced, write the final answer for the person who asked, briefly."
)


class PlanStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str
    instruction: str


class Plan(msgspec.Struct, frozen=True):
    steps: list[PlanStep]


plan_decoder = msgspec.json.Decoder(Plan)


def plan_system(settings: Settings) -> str:
    """The planner's system prompt: the configured roles and the step cap."""
    return PLAN_SYSTEM.format(
        roles=", ".join(sorted(settings.roles)), max_steps=settings.limits.max_steps_per_run
    )


def plan_messages(task: str) -> list[Message]:
    return [Message(role="user", content=[TextBlock(text=f"Task: {task}")])]


def retry_plan_messages(messages: list[Message], answer: list[Block], problem: str
                        ) -> list[Message]:
    """The conversation of the next plan attempt: the invalid answer and what is wrong."""
    return [
        *messages,
        Message(role="assistant", content=answer),
        Message(role="user", content=[TextBlock(
            text=f"That plan is invalid: {problem}. Reply again with the JSON plan only."
        )]),
    ]


def validate_plan(text: str, settings: Settings) -> Plan:
    """The plan in ``text``; raises ``ValueError`` saying what is wrong with it."""
    try:
        plan = plan_decoder.decode(text.strip().encode())
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a valid plan: {exc}") from exc
    if not plan.steps:
        raise ValueError("the plan has no steps")
    cap = settings.limits.max_steps_per_run
    if len(plan.steps) > cap:
        raise ValueError(f"the plan has {len(plan.steps)} steps, more than the cap of {cap}")
    roles = settings.roles
    for index, step in enumerate(plan.steps):
        if step.role not in roles:
            raise ValueError(f"steps[{index}].role {step.role!r} is not one of {sorted(roles)}")
        if not step.instruction.strip():
            raise ValueError(f"steps[{index}].instruction is empty")
    return plan


def step_prompt(task: str, instruction: str, earlier: list[str], feedback: str | None) -> str:
    """The first user message of a step's attempt."""
    text = f"Task: {task}\n\nYour step: {instruction}"
    if earlier:
        text += "\n\nEarlier steps:\n" + "\n".join(earlier)
    if feedback:
        text += f"\n\nA previous attempt at this step failed: {feedback}\nFix that."
    return text


def synthesis_messages(task: str, outputs: list[str]) -> list[Message]:
    text = f"Task: {task}\n\nWhat the steps produced:\n" + "\n\n".join(outputs)
    return [Message(role="user", content=[TextBlock(text=text)])]
