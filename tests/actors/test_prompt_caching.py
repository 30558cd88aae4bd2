"""Prompt caching (issue 12, point 4), through the real anthropic SDK against a local HTTP
server speaking the Messages API (tests/integration/messages_api.py, which counts cache
reads and writes at the request's cache points as the API does)."""

from __future__ import annotations

import pytest
from warden.actors.anthropic_model import AnthropicModel
from warden.actors.model import ModelRequest
from warden.actors.pricing import PriceTable
from warden.bus.wire import Message, TextBlock, ToolSpec
from warden.config import load_settings

from tests.integration.messages_api import MessagesAPI

pytestmark = pytest.mark.anyio

SYSTEM = "You are the research worker. " + "Be careful and factual. " * 60
TOOLS = [ToolSpec(name="list_files", description="List the workspace's files. " * 10,
                  input_schema={"type": "object", "properties": {}})]


def turn(*texts: str) -> ModelRequest:
    """A step's request whose conversation is ``texts``, alternating user and assistant."""
    messages = [Message(role="user" if i % 2 == 0 else "assistant",
                        content=[TextBlock(text=text)]) for i, text in enumerate(texts)]
    return ModelRequest(model="claude-haiku-4-5", system=SYSTEM, messages=messages,
                        max_tokens=256, tools=TOOLS, purpose="step", role="research")


async def test_a_turn_that_repeats_a_prefix_reads_it_from_the_cache_and_is_priced_so() -> None:
    prices = PriceTable(load_settings(env={}).pricing)
    with MessagesAPI() as api:
        model = AnthropicModel(api_key="k", base_url=api.url, prompt_caching=True)
        try:
            first = await model.complete(turn("Task: look around. " * 20))
            second = await model.complete(
                turn("Task: look around. " * 20, "Nothing there yet.", "Look again."))
        finally:
            await model.aclose()
        body = api.requests[1].body
    # The cache points: the system prompt (the tools before it are cached with it) and the
    # end of the conversation.
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body["messages"][0]["content"][-1]
    # The first call writes its whole prefix; the second reads it and writes its new turns.
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens > 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert 0 < second.usage.cache_creation_input_tokens < first.usage.cache_creation_input_tokens
    entry = prices.price("claude-haiku-4-5")
    usage = second.usage
    assert prices.cost("claude-haiku-4-5", usage) == pytest.approx(
        (usage.input_tokens * entry.input_per_mtok
         + usage.output_tokens * entry.output_per_mtok
         + usage.cache_read_input_tokens * entry.cache_read_per_mtok
         + usage.cache_creation_input_tokens * entry.cache_write_per_mtok) / 1e6)
    # Reads are cheaper than plain input: the second call costs less than it would uncached.
    assert entry.cache_read_per_mtok < entry.input_per_mtok


async def test_with_caching_off_nothing_is_marked_and_nothing_is_cached() -> None:
    with MessagesAPI() as api:
        model = AnthropicModel(api_key="k", base_url=api.url, prompt_caching=False)
        try:
            await model.complete(turn("Task: look around."))
            again = await model.complete(turn("Task: look around."))
        finally:
            await model.aclose()
        body = api.requests[1].body
    assert body["system"] == SYSTEM
    assert "cache_control" not in str(body)
    assert again.usage.cache_read_input_tokens == again.usage.cache_creation_input_tokens == 0
