"""``AnthropicModel``: the ``Model`` protocol over the Messages API, through the official SDK.

This is the only module of warden that imports ``anthropic``. Everything the SDK raises is
translated into the ``ModelError`` tree by one function, ``translate_sdk_error``:

- ``ModelRateLimitedError`` (retryable): 429 (``RateLimitError`` and its subclasses) and
  529 (``OverloadedError`` and its subclasses);
- ``ModelUnavailableError`` (retryable): 5xx but 501, 408 and 499; timeouts and connection
  failures (``APIConnectionError``); a reply the SDK could not validate, or that is not a
  message at all; a bare ``APIError`` (an error reported without a status); a
  ``RetryableError`` left over after the SDK's own retries;
- ``ModelRequestError`` (never retryable): every other 4xx (400, 401, 402, 403, 404, 409,
  413, 422, 431, ...); the 429 *spend caps* ``ContractSpendLimitReachedError`` and
  ``EnforcedSpendLimitReachedError``, because a billing cap does not lift within any retry
  window; 501, because the endpoint lacks the feature; any other ``AnthropicError``
  (credentials, misuse of the SDK, webhook validation), configuration that retrying does
  not repair.

A call still running at its request's ``deadline_s`` is cancelled (the HTTP request
abandoned) and raises ``ModelDeadlineError`` (retryable).

``tests/actors/test_sdk_error_mapping.py`` enumerates every ``AnthropicError`` subclass of
the installed SDK and fails on one it has not been told about.

The API key never leaves this module: it goes to the SDK's client and is otherwise kept
only to be scrubbed; it is not in the ``repr``, not logged, and replaced by ``[redacted]``
in every problem text (a proxy or a misbehaving endpoint may echo it in an error body).
Translated errors are raised ``from None``: the SDK's exception carries the raw response
body in its message and the request (the key in its ``Authorization: Bearer`` header: SDK
2.x no longer sends ``x-api-key``) as an attribute, and a chained traceback would print
the former. What a reader needs of it (status, error type, message, request id) is in the
problem text. Pinned by ``test_api_key_never_appears_in_error_text_or_logs``.

The SDK can retry 408, 409, 429 and 5xx itself (``max_retries``); warden turns that off
(``models.max_retries = 0``) and retries in the run supervisor's call gate instead, so that
one bound (``models.attempts``) counts every request a call makes. The ``retry-after`` the
provider sent (``retry-after-ms``, seconds or an HTTP date) travels on the error as
``retry_after``, for the gate to honour.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable

import anthropic
import anyio
import structlog
from anthropic import types as api
from warden.actors.api_names import ApiToolNames
from warden.actors.errors import (
    ModelDeadlineError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnavailableError,
)
from warden.actors.model import ModelReply, ModelRequest
from warden.actors.provider_errors import (
    MAX_PROBLEM_CHARS,
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
from warden.config.settings import ModelSettings

__all__ = ["AnthropicModel", "translate_sdk_error"]

log = structlog.get_logger(__name__)

_SPEND_LIMIT_ERRORS: tuple[type[anthropic.APIStatusError], ...] = (
    anthropic.ContractSpendLimitReachedError,
    anthropic.EnforcedSpendLimitReachedError,
)


class AnthropicModel:
    """A ``Model`` that calls the Anthropic Messages API with ``anthropic.AsyncAnthropic``.

    One instance holds one HTTP connection pool and may serve many concurrent calls.
    ``base_url=None`` means the SDK's default (``ANTHROPIC_BASE_URL`` if set, else
    ``https://api.anthropic.com``); with the key given explicitly the SDK reads no other
    credentials from the environment or from disk (it does still add the headers of
    ``ANTHROPIC_CUSTOM_HEADERS``). ``timeout`` is the HTTP timeout of each attempt, in
    seconds (connect, each read, each write); the SDK retries 408/409/429/5xx and
    connection failures up to ``max_retries`` times with exponential backoff
    (``max_retries=0`` turns that off). Raises ``ValueError`` on an empty key or a
    negative ``max_retries``; does no I/O.
    """

    provider = "anthropic"
    """``gen_ai.provider.name`` of its calls' spans."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        prompt_caching: bool = False,
    ) -> None:
        if not api_key:
            # An empty key would make the SDK fall back to the environment and the
            # credential files on disk; warden chooses the key explicitly or not at all.
            raise ValueError("AnthropicModel needs a non-empty api_key")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        self._secrets = (api_key,)
        self._prompt_caching = prompt_caching
        self._base_url = str(self._client.base_url)
        self._timeout = timeout
        self._max_retries = max_retries

    @classmethod
    def from_settings(cls, settings: ModelSettings, *, api_key: str) -> AnthropicModel:
        """Build a client from ``[models]`` settings (endpoint, timeout, retries)."""
        return cls(
            api_key=api_key,
            base_url=settings.anthropic_base_url,
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
        )

    def __repr__(self) -> str:
        return (
            f"AnthropicModel(base_url={self._base_url!r}, timeout={self._timeout!r}, "
            f"max_retries={self._max_retries!r})"
        )

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Make one Messages API call and return the reply.

        A cancellation point; blocks for the call's latency, including the SDK's retries
        and their backoff. Raises ``ModelRateLimitedError``, ``ModelUnavailableError`` or
        ``ModelRequestError`` (see the module docstring); never returns a partial reply.
        Logs ``model_call`` on success and ``model_call_failed`` on failure.
        """
        started = anyio.current_time()
        deadline = math.inf if request.deadline_s is None else request.deadline_s
        # MCP tools (``server.tool``) have names the API refuses: ``api_names.py``.
        names = ApiToolNames.of(tool.name for tool in request.tools)
        try:
            with anyio.fail_after(deadline):
                messages = [_to_api_message(m, names) for m in request.messages]
                system: str | list[api.TextBlockParam] | anthropic.Omit = (
                    request.system or anthropic.omit)
                if self._prompt_caching:
                    system = _cache_points(request.system, messages)
                message: object = await self._client.messages.create(
                    model=request.model,
                    # Empty ``system`` and ``tools`` are left out rather than sent empty: the
                    # API's validation of empty values has varied, their absence never has.
                    system=system,
                    messages=messages,
                    max_tokens=request.max_tokens,
                    tools=([_to_api_tool(t, names) for t in request.tools] if request.tools
                           else anthropic.omit),
                )
        except anthropic.AnthropicError as exc:
            error = translate_sdk_error(exc, model=request.model, secrets=self._secrets)
            log_model_failure(log, error, started)
            raise error from None
        except TimeoutError:
            error = ModelDeadlineError(request.model, deadline)
            log_model_failure(log, error, started)
            raise error from None
        latency_ms = _elapsed_ms(started)
        try:
            reply, dropped = _reply_from_api(message, model=request.model, latency_ms=latency_ms,
                                             names=names)
        except ModelUnavailableError as error:
            log_model_failure(log, error, started)
            raise
        log.info(
            "model_call",
            model=request.model,
            served_by=reply.model,
            stop_reason=reply.stop_reason,
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
            cache_creation_input_tokens=reply.usage.cache_creation_input_tokens,
            cache_read_input_tokens=reply.usage.cache_read_input_tokens,
            latency_ms=latency_ms,
            dropped_blocks=dropped,
        )
        return reply

    async def aclose(self) -> None:
        """Close the HTTP connection pool.

        Idempotent. A ``complete`` after it raises ``ModelUnavailableError``.
        """
        await self._client.close()


# -- the one boundary for SDK exceptions ------------------------------------------------


def translate_sdk_error(
    exc: anthropic.AnthropicError, *, model: str, secrets: Iterable[str] = ()
) -> ModelError:
    """Translate any exception of the SDK into our ``ModelError`` tree.

    Pure; does not raise. ``secrets`` (the API key) are replaced by ``[redacted]`` in the
    problem text. The table of rules is in the module docstring; the exhaustive test is
    ``tests/actors/test_sdk_error_mapping.py``.
    """
    problem = _problem_text(exc, secrets)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        retry_after = retry_after_of(exc.response, time.time())
        if isinstance(exc, anthropic.OverloadedError):
            return ModelRateLimitedError(model, problem, status=status, retry_after=retry_after)
        return status_error(model, problem, status=status, retry_after=retry_after,
                            billing_cap=isinstance(exc, _SPEND_LIMIT_ERRORS))
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ModelUnavailableError(model, problem, status=exc.status_code)
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        return ModelUnavailableError(model, problem)
    if isinstance(exc, anthropic.APIWebhookValidationError):
        # Raised verifying a webhook's signature, never by a call; listed so that the
        # catch-all below does not call it retryable.
        return ModelRequestError(model, problem)
    if isinstance(exc, anthropic.APIError | anthropic.RetryableError):
        return ModelUnavailableError(model, problem)
    return ModelRequestError(model, problem)


def _problem_text(exc: anthropic.AnthropicError, secrets: Iterable[str]) -> str:
    """A short, single-line, key-free account of what the SDK reported."""
    if isinstance(exc, anthropic.APIStatusError):
        kind = exc.type or type(exc).__name__
        detail = exc.api_message or _body_snippet(exc.body)
        text = f"{kind}: {detail}" if detail else kind
        if exc.error_code:
            text += f" [{exc.error_code}]"
        if exc.request_id:
            text += f" (request id {exc.request_id!r})"
    elif isinstance(exc, anthropic.APITimeoutError):
        text = "request timed out"
    elif isinstance(exc, anthropic.APIConnectionError):
        text = connection_problem(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return tidy_problem(text, secrets)


def _body_snippet(body: object) -> str:
    """The start of a response body that was not the API's JSON error shape."""
    if body is None:
        return ""
    return str(body)[:MAX_PROBLEM_CHARS]


# -- conversions ------------------------------------------------------------------------


_EPHEMERAL = api.CacheControlEphemeralParam(type="ephemeral")


def _cache_points(system: str, messages: list[api.MessageParam],
                  ) -> list[api.TextBlockParam] | anthropic.Omit:
    """Mark what repeats for Anthropic's prompt cache, and return the system prompt to send.

    Two cache points (the API allows four): the system prompt, which caches the tool
    definitions before it too (the cached prefix is tools, then system, then messages), and
    the last block of the conversation, so the next turn of the step, which repeats it
    whole, reads it from the cache. A prefix shorter than the model's minimum is simply not
    cached (the API's rule, no error). ``messages`` is marked in place."""
    if messages:
        content = messages[-1]["content"]
        if isinstance(content, list) and content:
            last = content[-1]
            if isinstance(last, dict):
                last["cache_control"] = _EPHEMERAL
    if not system:
        return anthropic.omit
    return [api.TextBlockParam(type="text", text=system, cache_control=_EPHEMERAL)]


def _to_api_message(message: Message, names: ApiToolNames) -> api.MessageParam:
    content = [_to_api_block(b, names) for b in message.content]
    if message.role == "user":
        return api.UserMessageParam(role="user", content=content)
    return api.AssistantMessageParam(role="assistant", content=content)


def _to_api_block(
    block: Block, names: ApiToolNames,
) -> api.TextBlockParam | api.ToolUseBlockParam | api.ToolResultBlockParam:
    match block:
        case TextBlock(text=text):
            return api.TextBlockParam(type="text", text=text)
        case ToolUseBlock(id=id_, name=name, input=input_):
            return api.ToolUseBlockParam(type="tool_use", id=id_, name=names.to_api(name),
                                         input=dict(input_))
        case ToolResultBlock(tool_use_id=tool_use_id, content=content, is_error=is_error):
            return api.ToolResultBlockParam(
                type="tool_result", tool_use_id=tool_use_id, content=content, is_error=is_error
            )


def _to_api_tool(tool: ToolSpec, names: ApiToolNames) -> api.ToolParam:
    return api.ToolParam(
        name=names.to_api(tool.name), description=tool.description,
        input_schema=dict(tool.input_schema),
    )


def _reply_from_api(message: object, *, model: str, latency_ms: float,
                    names: ApiToolNames | None = None) -> tuple[ModelReply, int]:
    """Our reply from the SDK's, and how many blocks it had that we do not represent.

    The SDK does not validate replies (strict validation is a private, unstable option of
    it), so a 200 whose body is not a message (an HTML page from a proxy, a body of the
    wrong shape) arrives here as a string or a half-built object: that is the provider's
    fault, raised as ``ModelUnavailableError``. Pinned by
    ``test_a_200_that_is_not_a_message_is_unavailable``.
    """
    content = getattr(message, "content", None)
    usage = getattr(message, "usage", None)
    if not isinstance(message, api.Message) or not isinstance(content, list):
        raise ModelUnavailableError(model, _malformed(message, "no content list"))
    if not isinstance(usage, api.Usage):
        raise ModelUnavailableError(model, _malformed(message, "no usage"))
    input_tokens = getattr(usage, "input_tokens", None)
    output_tokens = getattr(usage, "output_tokens", None)
    if not isinstance(input_tokens, int) or not isinstance(output_tokens, int):
        raise ModelUnavailableError(model, _malformed(message, "no token counts"))
    blocks, dropped = _from_api_content(content, names or ApiToolNames.of(()))
    # Non-streaming replies always carry a stop reason; ``None`` would be a provider bug,
    # read as the ordinary end of a turn.
    stop_reason = getattr(message, "stop_reason", None) or "end_turn"
    served_by = getattr(message, "model", None)
    reply = ModelReply(
        content=blocks,
        stop_reason=str(stop_reason),
        usage=Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            # The cache counts are optional in the API's schema; absent means none.
            cache_creation_input_tokens=_count(getattr(usage, "cache_creation_input_tokens", 0)),
            cache_read_input_tokens=_count(getattr(usage, "cache_read_input_tokens", 0)),
        ),
        model=served_by if isinstance(served_by, str) and served_by else model,
        latency_ms=latency_ms,
    )
    return reply, dropped


def _malformed(message: object, what: str) -> str:
    snippet = re.sub(r"\s+", " ", str(message))[:120]
    return f"the reply is not a Messages API message ({what}): {snippet}"


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


def _from_api_content(blocks: Iterable[object],
                      names: ApiToolNames) -> tuple[list[Block], int]:
    """Our blocks of a reply, and how many the reply had that we do not represent.

    warden asks for neither extended thinking nor server tools, so text and tool_use are
    all a reply should hold; anything else is dropped (and counted in ``model_call``).
    """
    content: list[Block] = []
    dropped = 0
    for block in blocks:
        if isinstance(block, api.TextBlock):
            content.append(TextBlock(text=block.text))
        elif isinstance(block, api.ToolUseBlock):
            arguments = block.input if isinstance(block.input, dict) else {}
            content.append(ToolUseBlock(id=block.id, name=names.from_api(block.name),
                                        input=dict(arguments)))
        else:
            dropped += 1
    return content, dropped


def _elapsed_ms(started: float) -> float:
    return (anyio.current_time() - started) * 1000.0
