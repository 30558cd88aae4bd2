"""Every name warden's traces use: span names, attribute keys, event names, values.

The pinned convention. The OpenTelemetry **GenAI semantic conventions** (status
*Development*) as in ``open-telemetry/semantic-conventions-genai`` at commit ``002c8a6``
(``docs/gen-ai/gen-ai-spans.md`` and ``gen-ai-agent-spans.md``, which cite
semantic-conventions v1.41.1 for ``error.type``); the ``gen_ai.*`` keys below are
exactly those of ``opentelemetry-semantic-conventions`` 0.66b2 (locked), module
``opentelemetry.semconv._incubating.attributes.gen_ai_attributes``
(``test_every_gen_ai_key_is_the_locked_semconv_packages``). Not followed: the genai
repository's unreleased rename of ``gen_ai.usage.cache_creation.input_tokens`` to
``gen_ai.usage.cache_write.input_tokens`` (its ``changelog.d/440.breaking.md``).
Moving to a newer version of the conventions is a change of this module only.

What the conventions leave to the application (policy decisions, approval waits,
warden's run and call ids, cost) is named under ``warden.*``, here too. Nothing else in
warden spells an attribute key.
"""

from __future__ import annotations

from typing import Final

__all__ = (
    "AGENT_NAME",
    "CONVERSATION_ID",
    "ERROR_TYPE",
    "EVENT_APPROVAL_DECIDED",
    "EVENT_APPROVAL_REQUESTED",
    "EVENT_POLICY_DECISION",
    "EVENT_RUN_STATUS",
    "INPUT_MESSAGES",
    "OPERATION_NAME",
    "OP_CHAT",
    "OP_EXECUTE_TOOL",
    "OP_INVOKE_AGENT",
    "OP_INVOKE_WORKFLOW",
    "OP_PLAN",
    "OUTPUT_MESSAGES",
    "PROVIDER_NAME",
    "REQUEST_MAX_TOKENS",
    "REQUEST_MODEL",
    "RESPONSE_FINISH_REASONS",
    "RESPONSE_MODEL",
    "SYSTEM_INSTRUCTIONS",
    "TOOL_CALL_ARGUMENTS",
    "TOOL_CALL_ID",
    "TOOL_CALL_RESULT",
    "TOOL_NAME",
    "TOOL_TYPE",
    "USAGE_CACHE_CREATION_INPUT_TOKENS",
    "USAGE_CACHE_READ_INPUT_TOKENS",
    "USAGE_INPUT_TOKENS",
    "USAGE_OUTPUT_TOKENS",
    "WARDEN_APPROVAL_ID",
    "WARDEN_CALL_KEY",
    "WARDEN_COST_USD",
    "WARDEN_DECISION",
    "WARDEN_DRY_RUN",
    "WARDEN_PURPOSE",
    "WARDEN_REASON",
    "WARDEN_RULE",
    "WARDEN_RUN_ID",
    "WARDEN_RUN_STATUS",
    "WARDEN_STEP",
    "WARDEN_STEP_ATTEMPT",
    "WARDEN_TOKENS",
    "WARDEN_TOOL_MODE",
    "WARDEN_TURN",
    "WORKFLOW",
    "WORKFLOW_NAME",
)

# -- gen_ai.operation.name values, which also open the span names ------------------------

OP_INVOKE_WORKFLOW: Final = "invoke_workflow"
"""The run: span ``invoke_workflow warden`` (the root of the run's trace)."""
OP_INVOKE_AGENT: Final = "invoke_agent"
"""One attempt of a step: span ``invoke_agent <role>``."""
OP_PLAN: Final = "plan"
"""The run's planning (its plan calls): span ``plan planner``."""
OP_CHAT: Final = "chat"
"""One model call: span ``chat <requested model>``."""
OP_EXECUTE_TOOL: Final = "execute_tool"
"""One tool call: span ``execute_tool <tool>``."""

WORKFLOW: Final = "warden"
"""``gen_ai.workflow.name`` of every run (low cardinality, as the conventions ask)."""

# -- gen_ai.* attribute keys --------------------------------------------------------------

OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
CONVERSATION_ID: Final = "gen_ai.conversation.id"
"""The run id, on every span of the run (warden's conversation is the run)."""
WORKFLOW_NAME: Final = "gen_ai.workflow.name"
AGENT_NAME: Final = "gen_ai.agent.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
"""All input tokens, cache reads and writes included (the Anthropic API's
``input_tokens`` excludes them; warden adds them)."""
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
TOOL_NAME: Final = "gen_ai.tool.name"
TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
"""The model's id of the tool use (``toolu_...``)."""
TOOL_TYPE: Final = "gen_ai.tool.type"
# Opt-in content (``tracing.capture_content``), as JSON strings:
SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"

ERROR_TYPE: Final = "error.type"
"""The general conventions' key: the exception's class name, or ``tool_error``/``timeout``
for a tool call that failed, or the run's ending status."""

# -- warden.* attribute keys --------------------------------------------------------------

WARDEN_RUN_ID: Final = "warden.run.id"
WARDEN_RUN_STATUS: Final = "warden.run.status"
WARDEN_DRY_RUN: Final = "warden.run.dry_run"
WARDEN_STEP: Final = "warden.step.index"
WARDEN_STEP_ATTEMPT: Final = "warden.step.attempt"
WARDEN_TURN: Final = "warden.turn"
WARDEN_PURPOSE: Final = "warden.purpose"
"""``plan``, ``step`` or ``synthesize``: why a model call was made."""
WARDEN_CALL_KEY: Final = "warden.call.key"
"""The call's idempotency key (``<run>/e<epoch>/s<step>/a<attempt>/t<turn>/c<call>``),
which is also its key in the journal (``warden show RUN --calls``)."""
WARDEN_TOOL_MODE: Final = "warden.tool.mode"
"""``run``, ``reconcile`` or ``simulate`` (a dry run's stand-in)."""
WARDEN_TOKENS: Final = "warden.usage.tokens"
"""Tokens of the step or run, as the journal counts them (cache included)."""
WARDEN_COST_USD: Final = "warden.cost_usd"
"""Dollars of the step or run, from the dated price table."""
WARDEN_RULE: Final = "warden.policy.rule"
"""Who decided: a guard's name (``blocked_patterns``, ``approval``, ``dry_run``, ...) or
``allowlist`` for the gate's own check."""
WARDEN_DECISION: Final = "warden.policy.decision"
"""``deny``, ``substitute`` or ``pause``; for an approval: ``approved``, ``denied``,
``expired``."""
WARDEN_REASON: Final = "warden.policy.reason"
WARDEN_APPROVAL_ID: Final = "warden.approval.id"

# -- event names (span events) ------------------------------------------------------------

EVENT_POLICY_DECISION: Final = "warden.policy.decision"
"""A guard or the gate answered a call other than "allow" (on the call's span, else the
step's)."""
EVENT_APPROVAL_REQUESTED: Final = "warden.approval.requested"
"""A call (or a step's answer) waits for a person: the wait starts here."""
EVENT_APPROVAL_DECIDED: Final = "warden.approval.decided"
"""The wait ended (approved, denied or expired)."""
EVENT_RUN_STATUS: Final = "warden.run.status"
"""The run changed status (on the run's span)."""
