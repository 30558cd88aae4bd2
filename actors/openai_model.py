"""``OpenAIModel``: the ``Model`` protocol over the Chat Completions API, through the official
``openai`` SDK, for OpenAI itself and every server that speaks that API (vLLM, Ollama,
llama.cpp's ``llama-server``, LiteLLM and other gateways).

This is the only module of warden that imports ``openai``. What it maps:

- **request**: the system prompt is the first message (``role: system``); our
  ``tool_use`` blocks are an assistant message's ``tool_calls`` (arguments as JSON text),
  our ``tool_result`` blocks are ``role: tool`` messages right after it (an error result's
  text starts with ``Error:``, the API having no error flag), any text of the same user
  turn a ``user`` message after them; tools are function tools. Tool names go through
  ``api_names.ApiToolNames``: the API takes ``^[a-zA-Z0-9_-]{1,64}$``, as the Messages API
  does, so MCP tools (``server.tool``) are renamed both ways alike. The completion ceiling
  is ``max_completion_tokens`` for OpenAI's own API (its reasoning models refuse
  ``max_tokens``) and ``max_tokens`` for any other endpoint (what every compatible
  server reads);
- **reply**: the first choice's text and ``tool_calls`` (arguments JSON-decoded; text that
  is not a JSON object becomes ``{"_invalid_json": <the text>}``, which no tool's schema
  takes, so the tool answers with an error the model can read and correct, and the
  journal shows what it sent); ``finish_reason`` as our stop reasons (``stop`` →
  ``end_turn``, ``length`` → ``max_tokens``, ``tool_calls`` → ``tool_use``,
  ``content_filter`` → ``refusal``); usage: ``prompt_tokens`` less
  ``prompt_tokens_details.cached_tokens`` as input, the cached tokens as cache reads
  (priced at ``cache_read_per_mtok``), ``completion_tokens`` as output. Chat Completions
  bills no cache writes. The reply is recorded and priced under the *requested* model's
  name (the served one is logged as ``served_by``): compatible servers name their models
  freely (an Ollama tag, a vLLM path, a dated OpenAI snapshot), and the price table is
  keyed by the names the settings use;
- **errors**, as ``anthropic_model.translate_sdk_error`` does for Anthropic
  (``translate_openai_error``): 429 → ``ModelRateLimitedError`` with the ``retry-after``
  (``retry-after-ms``, seconds or an HTTP date), except OpenAI's billing cap
  (``insufficient_quota``), which no retry lifts → ``ModelRequestError``; 5xx but 501,
  408, 499, timeouts and connection failures, a reply that is not a completion →
  ``ModelUnavailableError``; every other 4xx and anything else the SDK raises →
  ``ModelRequestError``. A call still running at the request's ``deadline_s`` is
  cancelled and raises ``ModelDeadlineError``.

The key never leaves this module: given to the SDK, otherwise kept only to be scrubbed from
every problem text; not in the ``repr``, not logged; translated errors are raised
``from None`` (the SDK's carry the request, with its ``Authorization`` header). With no
key (a local server), no ``Authorization`` header is sent at all, and the SDK is kept
from reading ``OPENAI_API_KEY`` by itself: which variable holds the key is the settings'
choice (``models.openai_api_key_env``). The SDK's own retries are off by default, as for
Anthropic: warden's call gate retries.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import openai
import structlog
from openai.types import chat as api
from warden.actors.api_names import ApiToolNames
from warden.actors.errors import (
    ModelDeadlineError,
    ModelError,
    ModelRequestError,
    ModelUnavailableError,
)
from warden.actors.model import ModelReply, ModelRequest
from warden.actors.provider_errors import (
    connection_problem,
    log_model_failure,
    status_error,
    tidy_problem,
)
from warden.actors.retry_after import retry_after_of
from warden.bus.wire import (
    Block,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)

__all__ = ["OPENAI_API", "OpenAIModel", "translate_openai_error"]

log = structlog.get_logger(__name__)

OPENAI_API = "https://api.openai.com/v1"
"""OpenAI's own endpoint: what ``base_url=None`` means."""

INVALID_JSON_KEY = "_invalid_json"
"""The one argument of a tool call whose arguments were not a JSON object: their text."""

_NO_AUTHORIZATION: Mapping[str, str | openai.Omit] = {"Authorization": openai.omit}

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_BILLING_CAPS = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
"""429 codes of OpenAI's spend caps: no retry window lifts them."""


class OpenAIModel:
    """A ``Model`` that calls a Chat Completions endpoint with ``openai.AsyncOpenAI``.

    One instance holds one HTTP connection pool and may serve many concurrent calls.
    ``base_url=None`` is OpenAI's own API (``OPENAI_API``; the SDK's ``OPENAI_BASE_URL``
    is not read: the endpoint is the settings' choice too). ``api_key=None`` or ``""``
    sends no ``Authorization`` header. ``timeout`` is each HTTP attempt's timeout in
    seconds; ``max_retries`` the SDK's own retries (0: none). Raises ``ValueError`` on a
    negative ``max_retries``; does no I/O.
    """

    provider = "openai"
    """``gen_ai.provider.name`` of its calls' spans."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 0,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        # Without a key: a key provider (an async callable) that returns "", because with
        # None the SDK reads OPENAI_API_KEY itself and with "" it refuses to start
        # ("missing credentials"); the request then omits Authorization (``_headers``).
        self._client = openai.AsyncOpenAI(
            api_key=api_key or _no_key,
            base_url=base_url or OPENAI_API,
            timeout=timeout,
            max_retries=max_retries,
        )
        self._secrets = (api_key,) if api_key else ()
        self._headers: Mapping[str, str | openai.Omit] = {} if api_key else _NO_AUTHORIZATION
        # OpenAI's reasoning models refuse ``max_tokens``; compatible servers read it.
        self._openai_itself = base_url is None or base_url.rstrip("/") == OPENAI_API
        self._base_url = str(self._client.base_url)
        self._timeout = timeout
        self._max_retries = max_retries

    def __repr__(self) -> str:
        return (
            f"OpenAIModel(base_url={self._base_url!r}, timeout={self._timeout!r}, "
            f"max_retries={self._max_retries!r})"
        )

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Make one Chat Completions call and return the reply.

        A cancellation point; blocks for the call's latency. Raises
        ``ModelRateLimitedError``, ``ModelUnavailableError``, ``ModelRequestError`` or
        ``ModelDeadlineError`` (see the module docstring); never returns a partial reply.
        Logs ``model_call`` on success and ``model_call_failed`` on failure.
        """
        started = anyio.current_time()
        deadline = math.inf if request.deadline_s is None else request.deadline_s
        names = ApiToolNames.of(tool.name for tool in request.tools)
        try:
            with anyio.fail_after(deadline):
                completion: object = await self._client.chat.completions.create(
                    model=request.model,
                    messages=to_api_messages(request.system, request.messages, names),
                    # No tools: left out rather than sent empty, which some servers refuse.
                    tools=([_to_api_tool(t, names) for t in request.tools] if request.tools
                           else openai.omit),
                    max_completion_tokens=(request.max_tokens if self._openai_itself
                                           else openai.omit),
                    max_tokens=openai.omit if self._openai_itself else request.max_tokens,
                    extra_headers=self._headers,
                )
        except openai.OpenAIError as exc:
            error = translate_openai_error(exc, model=request.model, secrets=self._secrets)
            log_model_failure(log, error, started)
            raise error from None
        except TimeoutError:
            error = ModelDeadlineError(request.model, deadline)
            log_model_failure(log, error, started)
            raise error from None
        latency_ms = (anyio.current_time() - started) * 1000.0
        try:
            reply, served_by = reply_from_api(completion, model=request.model,
                                              latency_ms=latency_ms, names=names)
        except ModelUnavailableError as error:
            log_model_failure(log, error, started)
            raise
        log.info(
            "model_call",
            model=request.model,
            served_by=served_by,
            stop_reason=reply.stop_reason,
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
            cache_read_input_tokens=reply.usage.cache_read_input_tokens,
            latency_ms=latency_ms,
        )
        return reply

    async def aclose(self) -> None:
        """Close the HTTP connection pool. Idempotent."""
        await self._client.close()


async def _no_key() -> str:
    """The key of an endpoint that takes none; the request omits ``Authorization``."""
    return ""


# -- the one boundary for SDK exceptions ------------------------------------------------


def translate_openai_error(
    exc: openai.OpenAIError, *, model: str, secrets: Iterable[str] = ()
) -> ModelError:
    """Translate any exception of the ``openai`` SDK into our ``ModelError`` tree.

    Pure; does not raise. ``secrets`` (the key) are replaced by ``[redacted]`` in the
    problem text. The rules are in the module docstring.
    """
    problem = _problem_text(exc, secrets)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return status_error(model, problem, status=status,
                            retry_after=retry_after_of(exc.response, time.time()),
                            billing_cap=status == 429 and exc.code in _BILLING_CAPS)
    if isinstance(exc, openai.APIResponseValidationError):
        return ModelUnavailableError(model, problem, status=exc.status_code)
    if isinstance(exc, openai.APIError):  # APIConnectionError, APITimeoutError, a bare one
        return ModelUnavailableError(model, problem)
    return ModelRequestError(model, problem)


def _problem_text(exc: openai.OpenAIError, secrets: Iterable[str]) -> str:
    """A short, single-line, key-free account of what the SDK reported."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        detail = body.get("message") if isinstance(body, dict) else body
        kind = exc.type or type(exc).__name__
        text = f"{kind}: {detail}" if detail else kind
        if exc.code:
            text += f" [{exc.code}]"
        if exc.request_id:
            text += f" (request id {exc.request_id!r})"
    elif isinstance(exc, openai.APITimeoutError):
        text = "request timed out"
    elif isinstance(exc, openai.APIConnectionError):
        text = connection_problem(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return tidy_problem(text, secrets)


# -- conversions ------------------------------------------------------------------------


def to_api_messages(system: str, messages: Iterable[Message],
                    names: ApiToolNames) -> list[api.ChatCompletionMessageParam]:
    """Our conversation as Chat Completions messages (the module docstring). Pure."""
    out: list[api.ChatCompletionMessageParam] = []
    if system:
        out.append(api.ChatCompletionSystemMessageParam(role="system", content=system))
    for message in messages:
        if message.role == "assistant":
            out.append(_assistant_message(message.content, names))
            continue
        texts: list[str] = []
        for block in message.content:
            if isinstance(block, ToolResultBlock):
                content = f"Error: {block.content}" if block.is_error else block.content
                out.append(api.ChatCompletionToolMessageParam(
                    role="tool", tool_call_id=block.tool_use_id, content=content))
            elif isinstance(block, TextBlock):
                texts.append(block.text)
        if texts:
            out.append(api.ChatCompletionUserMessageParam(role="user", content="".join(texts)))
    return out


def _assistant_message(blocks: Iterable[Block], names: ApiToolNames,
                       ) -> api.ChatCompletionAssistantMessageParam:
    text = "".join(b.text for b in blocks if isinstance(b, TextBlock))
    calls = [
        api.ChatCompletionMessageFunctionToolCallParam(
            id=b.id, type="function",
            function={"name": names.to_api(b.name), "arguments": json.dumps(b.input)},
        )
        for b in blocks if isinstance(b, ToolUseBlock)
    ]
    # Content may be null only beside tool calls; an empty turn is sent as "".
    message = api.ChatCompletionAssistantMessageParam(
        role="assistant", content=text if text or not calls else None)
    if calls:
        message["tool_calls"] = calls
    return message


def _to_api_tool(tool: ToolSpec, names: ApiToolNames) -> api.ChatCompletionFunctionToolParam:
    return api.ChatCompletionFunctionToolParam(type="function", function={
        "name": names.to_api(tool.name), "description": tool.description,
        "parameters": dict(tool.input_schema),
    })


def reply_from_api(completion: object, *, model: str, latency_ms: float,
                   names: ApiToolNames) -> tuple[ModelReply, str]:
    """Our reply from the SDK's completion, and the model that served it (by its own
    name). The SDK does not validate replies: a 200 that is not a completion with a
    choice and usage is the provider's fault, raised as ``ModelUnavailableError``."""
    if not isinstance(completion, api.ChatCompletion):
        raise ModelUnavailableError(model, _malformed(completion, "not a chat completion"))
    choices: Any = completion.choices
    if not isinstance(choices, list) or not choices:
        raise ModelUnavailableError(model, _malformed(completion, "no choices"))
    usage: Any = completion.usage
    prompt = getattr(usage, "prompt_tokens", None)
    output = getattr(usage, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(output, int):
        raise ModelUnavailableError(model, _malformed(completion, "no usage"))
    cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None)
    cached = min(max(cached, 0), prompt) if isinstance(cached, int) else 0
    choice = choices[0]
    content = _from_api_message(getattr(choice, "message", None), names)
    finish = getattr(choice, "finish_reason", None)
    stop_reason = _STOP_REASONS.get(str(finish), str(finish)) if finish else (
        "tool_use" if any(isinstance(b, ToolUseBlock) for b in content) else "end_turn")
    served_by = completion.model if isinstance(completion.model, str) else model
    reply = ModelReply(
        content=content,
        stop_reason=stop_reason,
        usage=Usage(input_tokens=prompt - cached, output_tokens=output,
                    cache_read_input_tokens=cached),
        model=model,
        latency_ms=latency_ms,
    )
    return reply, served_by or model


def _from_api_message(message: object, names: ApiToolNames) -> list[Block]:
    content: list[Block] = []
    text = getattr(message, "content", None)
    refusal = getattr(message, "refusal", None)
    if isinstance(text, str) and text:
        content.append(TextBlock(text=text))
    elif isinstance(refusal, str) and refusal:
        content.append(TextBlock(text=refusal))
    for index, call in enumerate(getattr(message, "tool_calls", None) or ()):
        function = getattr(call, "function", None)  # a custom (non-function) call has none
        name = getattr(function, "name", None)
        if not isinstance(name, str):
            continue
        # Some servers leave the id out; the tool's result must still name its call.
        call_id = getattr(call, "id", None)
        content.append(ToolUseBlock(id=call_id if isinstance(call_id, str) and call_id
                                    else f"call_{index}",
                                    name=names.from_api(name),
                                    input=tool_arguments(getattr(function, "arguments", None))))
    return content


def tool_arguments(text: object) -> dict[str, object]:
    """A tool call's arguments from their JSON text; text that is not a JSON object is
    kept as ``{"_invalid_json": text}`` (module docstring); empty text is no argument.
    Pure."""
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        decoded = json.loads(text)
    except ValueError:
        return {INVALID_JSON_KEY: text}
    return decoded if isinstance(decoded, dict) else {INVALID_JSON_KEY: text}


def _malformed(completion: object, what: str) -> str:
    snippet = re.sub(r"\s+", " ", str(completion))[:120]
    return f"the reply is not a chat completion ({what}): {snippet}"
