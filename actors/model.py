"""The one protocol every model client follows, and what goes in and out of it.

Two clients implement it: ``AnthropicModel`` (the Messages API through the official SDK)
and ``ScriptedModel`` (deterministic and offline). The run supervisor and the workers see
only ``Model``.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec
from warden.bus.wire import Block, Message, TextBlock, ToolSpec, Usage
from warden.config import ConfigError, Settings

Purpose = Literal["plan", "step", "synthesize"]


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One call of a model.

    ``purpose``, ``role`` and ``scenario`` are hints: a real model ignores them (its
    instructions are in ``system`` and ``messages``); the scripted model uses them to pick
    its next turn deterministically.
    """

    model: str
    system: str
    messages: list[Message]
    max_tokens: int
    tools: list[ToolSpec] = []
    purpose: Purpose = "step"
    role: str | None = None
    scenario: str | None = None


class ModelReply(msgspec.Struct, frozen=True, kw_only=True):
    """What a model answered, with its usage as the provider reported it."""

    content: list[Block]
    stop_reason: str
    usage: Usage
    model: str
    latency_ms: float = 0.0

    @property
    def text(self) -> str:
        """The concatenated text blocks of the reply."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))


class Model(Protocol):
    """A model client.

    ``complete`` is a cancellation point and blocks for the model's latency. It raises
    ``ModelError`` (with ``retryable``) for anything the provider or the transport did
    wrong; it never returns a partial reply.
    """

    async def complete(self, request: ModelRequest) -> ModelReply: ...

    async def aclose(self) -> None: ...


def build_model(settings: Settings, *, api_key: str | None) -> Model:
    """The model client the settings ask for.

    ``provider = "auto"`` picks anthropic when ``api_key`` is set and the scripted model
    otherwise. Raises ``ConfigError`` when anthropic is asked for without a key.
    """
    provider = settings.models.provider
    if provider == "auto":
        provider = "anthropic" if api_key else "scripted"
    if provider == "anthropic":
        if not api_key:
            raise ConfigError("models.provider", "anthropic", "needs ANTHROPIC_API_KEY to be set")
        from warden.actors.anthropic_model import AnthropicModel

        return AnthropicModel(
            api_key=api_key,
            base_url=settings.models.anthropic_base_url,
            timeout=settings.models.timeout_s,
            max_retries=settings.models.max_retries,
        )
    from warden.actors.scripted_model import ScriptedModel, load_scripts

    return ScriptedModel(
        latency_ms=settings.models.scripted_latency_ms,
        scenarios=load_scripts(settings.models.script_files),
    )
