"""``OpenAIModel`` through the real ``openai`` SDK, against a local server speaking the
Chat Completions API (``tests/integration/chat_completions_api.py``): the mapping of
messages and tools both ways, usage with cache reads, each error class with its status,
``retry-after``, the deadline, and the key: never in an error, sent only when set, and
never read by the SDK from the environment on its own."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from warden.actors import openai_model
from warden.actors.api_names import ApiToolNames
from warden.actors.errors import (
    ModelDeadlineError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnavailableError,
)
from warden.actors.model import ModelReply, ModelRequest
from warden.actors.model_factory import build_model
from warden.actors.openai_model import INVALID_JSON_KEY, OpenAIModel, to_api_messages
from warden.actors.sandbox import run_sandboxed
from warden.bus.wire import Message, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock
from warden.config import ConfigError, Settings, load_settings
from warden.config.settings import SandboxSettings

from tests.integration.chat_completions_api import ChatCompletionsAPI, ToolCall
from tests.integration.messages_api import Answer, Refuse, always, closed_url

pytestmark = pytest.mark.anyio

API_KEY = "sk-openai-test-0123456789abcdef-SECRET"
MODEL = "llama-test-8b"
PLANNER = "You are the planner of a small team."
WORKER = "You are the code worker of a small software team."
WRITE = ToolSpec(name="write_file", description="Write a file.", input_schema={
    "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
    "required": ["path", "content"]})
MCP_TOOL = ToolSpec(name="docs.search", description="Search the docs.",
                    input_schema={"type": "object", "properties": {"q": {"type": "string"}}})


@pytest.fixture
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> list[MutableMapping[str, object]]:
    """Every event the adapter logs (its module logger swapped for a capturing one, as
    ``test_anthropic_model`` does: the suite's structlog caches its loggers)."""
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(openai_model, "log", structlog.wrap_logger(
        None, processors=[capture], cache_logger_on_first_use=False,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)))
    return capture.entries


def user(text: str) -> Message:
    return Message(role="user", content=[TextBlock(text=text)])


def request(system: str = WORKER, messages: list[Message] | None = None, **fields: object,
            ) -> ModelRequest:
    return ModelRequest(model=MODEL, system=system, max_tokens=256,
                        messages=messages or [user("Task: write hello.py")],
                        **fields)


async def complete(api: ChatCompletionsAPI, req: ModelRequest, *,
                   api_key: str | None = API_KEY) -> ModelReply:
    model = OpenAIModel(api_key=api_key, base_url=api.url, timeout=5.0)
    try:
        return await model.complete(req)
    finally:
        await model.aclose()


async def test_a_text_reply_maps_content_stop_reason_usage_and_keeps_the_requested_name(
        ) -> None:
    with ChatCompletionsAPI(served_model="llama3.1:8b-instruct-q4_K_M") as api:
        model = OpenAIModel(api_key=API_KEY, base_url=api.url)
        reply = await model.complete(request(system=PLANNER))
        await model.aclose()
    assert reply.content == [TextBlock(text=api.plan_text)]
    assert reply.stop_reason == "end_turn"
    assert reply.usage.output_tokens >= 1 and reply.usage.input_tokens >= 1
    assert reply.usage.cache_read_input_tokens == 0 == reply.usage.cache_creation_input_tokens
    # The server names its model its own way; the call is priced by the configured name.
    assert reply.model == MODEL


async def test_the_request_carries_system_messages_tools_and_max_tokens() -> None:
    history = [
        user("Task: write hello.py"),
        Message(role="assistant", content=[
            TextBlock(text="Writing it."),
            ToolUseBlock(id="call_1", name="write_file", input={"path": "a.py", "content": "x"}),
            ToolUseBlock(id="call_2", name="docs.search", input={"q": "hello"})]),
        Message(role="user", content=[
            ToolResultBlock(tool_use_id="call_1", content="wrote 1 byte"),
            ToolResultBlock(tool_use_id="call_2", content="no such index", is_error=True),
            TextBlock(text="Go on.")]),
    ]
    with ChatCompletionsAPI() as api:
        await complete(api, request(messages=history, tools=[WRITE, MCP_TOOL]))
    body = api.requests[0].body
    assert body["model"] == MODEL and body["max_tokens"] == 256
    assert "max_completion_tokens" not in body  # a compatible server reads max_tokens
    assert body["messages"] == [
        {"role": "system", "content": WORKER},
        {"role": "user", "content": "Task: write hello.py"},
        {"role": "assistant", "content": "Writing it.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {
                "name": "write_file", "arguments": '{"path": "a.py", "content": "x"}'}},
            {"id": "call_2", "type": "function", "function": {
                "name": "docs__search", "arguments": '{"q": "hello"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "wrote 1 byte"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: no such index"},
        {"role": "user", "content": "Go on."},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "write_file", "description": "Write a file.",
                                          "parameters": WRITE.input_schema}},
        {"type": "function", "function": {"name": "docs__search",
                                          "description": "Search the docs.",
                                          "parameters": MCP_TOOL.input_schema}},
    ]


async def test_no_system_and_no_tools_are_left_out() -> None:
    with ChatCompletionsAPI() as api:
        await complete(api, request(system=""))
    body: Any = api.requests[0].body
    assert "tools" not in body
    assert [m["role"] for m in body["messages"]] == ["user"]


async def test_openai_itself_is_sent_max_completion_tokens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with ChatCompletionsAPI() as api:
        # The fake server stands in for OpenAI's own API (``base_url=None``).
        monkeypatch.setattr(openai_model, "OPENAI_API", api.url)
        model = OpenAIModel(api_key=API_KEY)
        await model.complete(request())
        await model.aclose()
    body = api.requests[0].body
    assert body["max_completion_tokens"] == 256 and "max_tokens" not in body


async def test_a_tool_call_comes_back_as_tool_use_with_decoded_arguments_and_our_name() -> None:
    steps = [ToolCall("docs__search", {"q": "hello", "n": 2})]
    with ChatCompletionsAPI(steps=steps) as api:
        reply = await complete(api, request(tools=[WRITE, MCP_TOOL]))
    assert reply.stop_reason == "tool_use"
    assert reply.content == [
        ToolUseBlock(id="call_0000", name="docs.search", input={"q": "hello", "n": 2})]


@pytest.mark.parametrize("raw", ['{"path": "a.py", "content": ', "[1, 2]", "null"])
async def test_arguments_that_are_not_a_json_object_are_kept_as_text_for_the_tool_to_refuse(
        raw: str) -> None:
    with ChatCompletionsAPI(steps=[ToolCall("write_file", raw)]) as api:
        reply = await complete(api, request(tools=[WRITE]))
    (block,) = reply.content
    assert isinstance(block, ToolUseBlock) and block.input == {INVALID_JSON_KEY: raw}


async def test_a_repeated_prefix_is_read_from_the_cache_and_left_out_of_input_tokens() -> None:
    with ChatCompletionsAPI() as api:
        model = OpenAIModel(api_key=API_KEY, base_url=api.url)
        first = await model.complete(request(tools=[WRITE]))
        second = await model.complete(request(tools=[WRITE], messages=[
            user("Task: write hello.py"), Message(role="assistant", content=[TextBlock(text="ok")]),
            user("Now the tests.")]))
        await model.aclose()
    assert first.usage.cache_read_input_tokens == 0
    # The tools, system and first user message repeat: read from the cache.
    assert second.usage.cache_read_input_tokens > 0
    # prompt_tokens counts them; our input tokens do not (each is priced at its own rate).
    assert second.usage.input_tokens + second.usage.cache_read_input_tokens > \
        first.usage.input_tokens
    assert second.usage.input_tokens < first.usage.input_tokens + 20


@pytest.mark.parametrize(("refusal", "error_class", "retry_after"), [
    (Refuse(429, "requests", "Rate limit reached", retry_after="3"), ModelRateLimitedError, 3.0),
    (Refuse(429, "insufficient_quota", "You exceeded your current quota",
            error_code="insufficient_quota"), ModelRequestError, None),
    (Refuse(500, "server_error", "The server had an error"), ModelUnavailableError, None),
    (Refuse(503, "server_error", "Overloaded", retry_after="1"), ModelUnavailableError, 1.0),
    (Refuse(501, "not_implemented", "No tools here"), ModelRequestError, None),
    (Refuse(400, "invalid_request_error", "bad max_tokens"), ModelRequestError, None),
    (Refuse(401, "invalid_request_error", "Incorrect API key"), ModelRequestError, None),
    (Refuse(404, "not_found", "The model does not exist"), ModelRequestError, None),
])
async def test_each_error_status_is_translated_with_its_status_and_retry_after(
        refusal: Refuse, error_class: type[ModelError], retry_after: float | None) -> None:
    with ChatCompletionsAPI(always(refusal)) as api:
        with pytest.raises(error_class) as caught:
            await complete(api, request())
    error = caught.value
    assert type(error) is error_class
    assert error.status == refusal.status and error.retry_after == retry_after
    assert error.retryable is (error_class is not ModelRequestError)
    assert refusal.message in error.problem and "req_fake_" in error.problem
    assert error.__cause__ is None and error.__suppress_context__
    assert len(api.requests) == 1  # the SDK's own retries are off: the gate retries


async def test_a_refused_connection_is_unavailable_and_retryable() -> None:
    model = OpenAIModel(api_key=API_KEY, base_url=f"{closed_url()}/v1", timeout=2.0)
    with pytest.raises(ModelUnavailableError) as caught:
        await model.complete(request())
    await model.aclose()
    assert caught.value.status is None and "connection failed" in caught.value.problem


async def test_a_call_past_its_deadline_is_cancelled_with_a_deadline_error() -> None:
    with ChatCompletionsAPI(always(Answer(hold_s=10.0))) as api:
        with pytest.raises(ModelDeadlineError) as caught:
            await complete(api, request(deadline_s=0.2))
    assert caught.value.deadline_s == 0.2 and caught.value.retryable


async def test_the_key_is_in_no_error_text_nor_log_even_when_the_server_echoes_it(
        captured_logs: list[MutableMapping[str, object]]) -> None:
    echo = Refuse(401, "invalid_request_error", f"Incorrect API key provided: {API_KEY}")
    with ChatCompletionsAPI(always(echo)) as api:
        model = OpenAIModel(api_key=API_KEY, base_url=api.url)
        with pytest.raises(ModelRequestError) as caught:
            await model.complete(request())
        await model.aclose()
    assert api.received[0].authorization == f"Bearer {API_KEY}"
    assert API_KEY not in str(caught.value) and "[redacted]" in caught.value.problem
    assert API_KEY not in repr(model)
    assert captured_logs and API_KEY not in json.dumps(captured_logs, default=str)


async def test_without_a_key_no_authorization_is_sent_and_openai_api_key_is_not_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    with ChatCompletionsAPI() as api:
        await complete(api, request(), api_key=None)
        await complete(api, request(), api_key="")
    assert [r.authorization for r in api.received] == [None, None]


# -- configuration ------------------------------------------------------------------------


def openai_settings(**overrides: object) -> Settings:
    values: dict[tuple[str, ...], object] = {("models", "provider"): "openai"}
    for dotted, value in overrides.items():
        values[tuple(dotted.split("__"))] = value
    return load_settings(env={}, overrides=values)


async def test_the_factory_reads_the_key_from_the_variable_the_settings_name() -> None:
    with ChatCompletionsAPI() as api:
        settings = openai_settings(models__openai_base_url=api.url,
                                   models__openai_api_key_env="LOCAL_LLM_KEY")
        model = build_model(settings, api_key="sk-ant-unused",
                            environ={"LOCAL_LLM_KEY": "sk-local", "OPENAI_API_KEY": "sk-other"})
        assert isinstance(model, OpenAIModel)
        await model.complete(request())
        await model.aclose()
        # No key in the environment: a local server is called without one.
        keyless = build_model(settings, api_key=None, environ={})
        await keyless.complete(request())
        await keyless.aclose()
    assert [r.authorization for r in api.received] == ["Bearer sk-local", None]


def test_openai_itself_without_a_key_and_a_bad_variable_name_are_config_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        build_model(openai_settings(), api_key=None, environ={})
    assert caught.value.key == "models.provider" and "OPENAI_API_KEY" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        build_model(openai_settings(models__openai_base_url="http://127.0.0.1:1/v1",
                                    models__openai_api_key_env="NOT A NAME"),
                    api_key=None, environ={})
    assert caught.value.key == "models.openai_api_key_env"


def test_a_zero_price_is_accepted_and_a_missing_one_is_still_a_config_error() -> None:
    free = {"input_per_mtok": 0.0, "output_per_mtok": 0.0}
    values: dict[tuple[str, ...], object] = {
        ("models", "provider"): "openai", ("models", "planner"): "qwen2.5-coder",
        ("pricing", "models", "qwen2.5-coder"): free}
    for role in ("research", "code", "review"):
        values[("roles", role, "model")] = "qwen2.5-coder"
    settings = load_settings(env={}, overrides=values)
    assert settings.pricing.models["qwen2.5-coder"].input_per_mtok == 0.0
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides={("models", "planner"): "qwen2.5-coder"})
    assert caught.value.key == "models.planner"


async def test_the_sandbox_sees_no_openai_variable_nor_the_one_holding_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"OPENAI_API_KEY": "secret-o", "OPENAI_BASE_URL": "secret-b",
               "OPENAI_ORG_ID": "secret-g", "LOCAL_LLM_KEY": "secret-l"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    result = await run_sandboxed(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        cwd=tmp_path, settings=SandboxSettings(timeout_s=20.0, isolation="none"))
    seen = json.loads(result.stdout)
    assert not set(secrets) & set(seen)
    assert not any(value in result.stdout for value in secrets.values())


def test_messages_map_to_the_api_without_io() -> None:
    names = ApiToolNames.of(["write_file"])
    mapped = to_api_messages("", [Message(role="assistant", content=[
        ToolUseBlock(id="c", name="write_file", input={})])], names)
    assert msgspec.json.decode(msgspec.json.encode(mapped)) == [{
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "write_file",
                                                          "arguments": "{}"}}]}]
