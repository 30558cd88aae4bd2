"""The rules by which every exception of the ``anthropic`` SDK becomes a ``ModelError``.

Pinned here (see ``actors/anthropic_model.py`` for the rules themselves):

- one case per HTTP status family (408, 429, 499, 5xx, 501, 529, the other 4xx) and per
  SDK base class without a status (connection, timeout, validation, bare ``APIError``,
  ``RetryableError``, the SDK's own misuse errors): which error and whether retryable;
- a short list of departures from the status rule: the spend-limit 429s, which no retry
  window lifts, are not retryable;
- every ``AnthropicError`` class of the installed SDK, found by introspection, maps
  without raising to a ``ModelError`` whose ``retryable`` follows the status rule unless
  it is a listed departure. Nothing here names a class the SDK may add or drop, so a new
  SDK release cannot fail this module by adding error classes (it was a hand-kept
  inventory of 141 names until anthropic 2.16 added 38 more).

Instances are built the way the SDK builds them: status errors through the SDK's own
``make_status_error`` around an ``httpx2`` response (the HTTP library of SDK 2.x).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import warnings

import anthropic
import httpx2
import pytest
from anthropic._error_classes import make_status_error
from warden.actors.anthropic_model import translate_sdk_error
from warden.actors.errors import (
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnavailableError,
)

MODEL = "claude-test-model"
SECRET = "sk-ant-test-SECRET-in-the-body"
URL = "https://api.anthropic.com/v1/messages"

DEPARTURES: dict[str, type[ModelError]] = {
    # 429s whose cause is a billing cap: no retry window lifts them.
    "ContractSpendLimitReachedError": ModelRequestError,
    "EnforcedSpendLimitReachedError": ModelRequestError,
}


def retryable_status(status: int) -> bool:
    """The status rule: throttling, timeouts, dropped connections and server faults are
    worth another attempt; 501 (the endpoint lacks the feature) and other 4xx are not."""
    return status in (408, 429, 499, 529) or (status >= 500 and status != 501)


def status_error(status: int, *, error_code: str | None = None) -> anthropic.APIStatusError:
    """What the SDK raises for ``status`` (and the body's ``error_code``)."""
    error: dict[str, object] = {"type": "api_error", "message": "the SDK says no"}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    body = {"type": "error", "error": error}
    response = httpx2.Response(
        status, request=httpx2.Request("POST", URL), json=body, headers={"request-id": "req_42"}
    )
    return make_status_error(f"Error code: {status} - {body}", body=body, response=response)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ModelRequestError),
        (401, ModelRequestError),
        (402, ModelRequestError),
        (403, ModelRequestError),
        (404, ModelRequestError),
        (408, ModelUnavailableError),
        (409, ModelRequestError),
        (413, ModelRequestError),
        (418, ModelRequestError),
        (422, ModelRequestError),
        (429, ModelRateLimitedError),
        (499, ModelUnavailableError),
        (500, ModelUnavailableError),
        (501, ModelRequestError),
        (502, ModelUnavailableError),
        (503, ModelUnavailableError),
        (504, ModelUnavailableError),
        (529, ModelRateLimitedError),
        (599, ModelUnavailableError),
    ],
)
def test_status_family_maps_to_its_error(status: int, expected: type[ModelError]) -> None:
    error = translate_sdk_error(status_error(status), model=MODEL)

    assert type(error) is expected
    assert error.retryable is retryable_status(status)
    assert error.status == status
    assert error.model == MODEL
    assert "the SDK says no" in error.problem
    assert "req_42" in error.problem


@pytest.mark.parametrize(
    ("error_code", "status"),
    [("enforced_spend_limit_reached", 429), ("contract_spend_limit_reached", 429)],
)
def test_spend_limit_refusals_are_not_retryable(error_code: str, status: int) -> None:
    exc = status_error(status, error_code=error_code)
    assert type(exc).__name__ in DEPARTURES  # the SDK still tells them apart by error_code

    error = translate_sdk_error(exc, model=MODEL)

    assert type(error) is ModelRequestError
    assert error.retryable is False
    assert error.status == 429


def test_a_plain_rate_limit_is_retryable() -> None:
    error = translate_sdk_error(status_error(429, error_code=None), model=MODEL)

    assert type(error) is ModelRateLimitedError
    assert error.retryable is True


def _request() -> httpx2.Request:
    return httpx2.Request("POST", URL)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (anthropic.APIConnectionError(message="refused", request=_request()),
         ModelUnavailableError),
        (anthropic.APITimeoutError(_request()), ModelUnavailableError),
        (anthropic.APIResponseValidationError(
            httpx2.Response(200, request=_request(), json={}), body={}, message="bad shape"),
         ModelUnavailableError),
        (anthropic.APIError("reported without a status", _request(), body=None),
         ModelUnavailableError),
        (anthropic.AnthropicError("the SDK used wrongly"), ModelRequestError),
        (anthropic.CredentialsError("no credentials"), ModelRequestError),
    ],
    ids=["connection", "timeout", "validation", "bare-api-error", "sdk-misuse", "credentials"],
)
def test_error_without_a_status_maps_by_its_base_class(
    exc: anthropic.AnthropicError, expected: type[ModelError]
) -> None:
    error = translate_sdk_error(exc, model=MODEL)

    assert type(error) is expected
    assert error.retryable is (expected is not ModelRequestError)


@functools.cache
def sdk_error_classes() -> dict[str, type[anthropic.AnthropicError]]:
    """Every ``AnthropicError`` class of the installed SDK, by name.

    Imports every submodule first, so classes of modules ``import anthropic`` does not
    load are found too; submodules whose optional dependencies are missing are skipped.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for info in pkgutil.walk_packages(anthropic.__path__, "anthropic."):
            try:
                importlib.import_module(info.name)
            except ImportError:
                continue
    found: dict[str, type[anthropic.AnthropicError]] = {}
    pending: list[type[anthropic.AnthropicError]] = [anthropic.AnthropicError]
    while pending:
        cls = pending.pop()
        found.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
        pending.extend(sub for sub in cls.__subclasses__() if sub not in found.values())
    return found


def status_of(cls: type[anthropic.APIStatusError]) -> int:
    """The status the SDK raises ``cls`` for; 502 and 418 for the catch-alls that have none."""
    for klass in cls.__mro__:
        status = klass.__dict__.get("status_code")
        if isinstance(status, int):
            return status
    return 502 if issubclass(cls, anthropic.InternalServerError) else 418


def build(cls: type[anthropic.AnthropicError], message: str) -> anthropic.AnthropicError:
    """An instance of ``cls``, constructed as the SDK constructs it."""
    request = _request()
    if issubclass(cls, anthropic.APIStatusError):
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        response = httpx2.Response(
            status_of(cls), request=request, json=body, headers={"request-id": "req_42"}
        )
        return cls(f"Error code: {response.status_code} - {body}", response=response, body=body)
    if issubclass(cls, anthropic.APIResponseValidationError):
        return cls(httpx2.Response(200, request=request, json={}), body={}, message=message)
    if issubclass(cls, anthropic.APITimeoutError):
        return cls(request)
    if issubclass(cls, anthropic.APIConnectionError):
        return cls(message=message, request=request)
    if issubclass(cls, anthropic.APIError):
        return cls(message, request, body=None)
    # The SDK's other errors take a message, nothing, or keyword-only details.
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except ValueError:  # no __init__ of its own: Exception's, which takes a message
        return cls(message)
    args = [
        message
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    kwargs = {
        p.name: message for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    }
    return cls(*args, **kwargs)


def test_the_sdk_walk_finds_the_base_classes() -> None:
    names = {cls.__name__ for cls in sdk_error_classes().values()}
    assert {"AnthropicError", "APIStatusError", "RateLimitError", "APIConnectionError"} <= names
    assert set(DEPARTURES) <= names, "a listed departure is gone from the SDK: drop it here"


@pytest.mark.parametrize("name", sorted(sdk_error_classes()))
def test_every_sdk_error_class_maps_without_raising_and_follows_the_rules(name: str) -> None:
    cls = sdk_error_classes()[name]
    exc = build(cls, "the SDK says no")

    error = translate_sdk_error(exc, model=MODEL)

    assert isinstance(error, ModelError)
    assert error.model == MODEL
    departure = DEPARTURES.get(cls.__name__)
    if departure is not None:
        assert type(error) is departure
        assert error.retryable is False
    elif isinstance(exc, anthropic.APIStatusError):
        assert error.retryable is retryable_status(exc.status_code)
        assert error.status == exc.status_code
        assert "the SDK says no" in error.problem
    elif isinstance(exc, anthropic.APIError) and not isinstance(
        exc, anthropic.APIWebhookValidationError
    ):
        assert error.retryable is True  # transport, validation, a fault reported mid-stream
    else:
        assert error.retryable is isinstance(exc, anthropic.RetryableError)


@pytest.mark.parametrize(
    "exc",
    [
        anthropic.BadRequestError(
            "Error code: 400",
            response=httpx2.Response(
                400,
                request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages"),
                json={"error": {"type": "invalid_request_error", "message": f"key {SECRET}"}},
            ),
            body={"error": {"type": "invalid_request_error", "message": f"key {SECRET}"}},
        ),
        anthropic.APIError(
            f"stream error mentioning {SECRET}",
            httpx2.Request("POST", "https://api.anthropic.com/v1/messages"),
            body=None,
        ),
        anthropic.CredentialsError(f"could not use {SECRET}"),
    ],
    ids=["status-error-body", "api-error-message", "credentials-error"],
)
def test_secrets_are_scrubbed_from_the_problem_text(exc: anthropic.AnthropicError) -> None:
    error = translate_sdk_error(exc, model=MODEL, secrets=[SECRET])

    assert SECRET not in str(error)
    assert "[redacted]" in error.problem


def test_problem_text_is_one_short_line() -> None:
    body = "<html>\n" + "x" * 5000 + "\n</html>"
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    exc = anthropic.InternalServerError(
        "Error code: 502", response=httpx2.Response(502, request=request, text=body), body=body
    )

    error = translate_sdk_error(exc, model=MODEL)

    assert "\n" not in error.problem
    assert len(error.problem) <= 300
