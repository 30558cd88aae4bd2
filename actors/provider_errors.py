"""What the model clients share at their SDK boundary (``anthropic_model.py``,
``openai_model.py``): the rule from an HTTP status to our ``ModelError`` tree, the shape of
a problem text, and the log line of a failed call.

- **status** (``status_error``): a billing cap (a 429 no retry window lifts) and every
  4xx not named below → ``ModelRequestError``; 429 and 529 → ``ModelRateLimitedError``
  with the provider's ``retry-after``; 501 (the endpoint lacks the feature) →
  ``ModelRequestError``; other 5xx, 408 (the server timed out waiting for us) and 499 (a
  proxy saw the connection drop) → ``ModelUnavailableError``;
- **problem texts** (``tidy_problem``): one line, at most 300 characters (enough for the
  provider's message, not a whole HTML page), every secret replaced by ``[redacted]``: a
  proxy or a misbehaving endpoint may echo the key in an error body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import anyio
from structlog.typing import FilteringBoundLogger
from warden.actors.errors import (
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnavailableError,
)

__all__ = ("MAX_PROBLEM_CHARS", "connection_problem", "log_model_failure", "status_error",
           "tidy_problem")

MAX_PROBLEM_CHARS = 300
"""Problem texts are cut here."""

_REDACTED = "[redacted]"


def status_error(model: str, problem: str, *, status: int, retry_after: float | None,
                 billing_cap: bool = False) -> ModelError:
    """The error of a call the provider refused with ``status`` (module docstring). Pure."""
    if billing_cap:
        return ModelRequestError(model, problem, status=status)
    if status in (429, 529):
        return ModelRateLimitedError(model, problem, status=status, retry_after=retry_after)
    if status == 501:
        return ModelRequestError(model, problem, status=status)
    if status >= 500 or status in (408, 499):
        return ModelUnavailableError(model, problem, status=status, retry_after=retry_after)
    return ModelRequestError(model, problem, status=status)


def connection_problem(exc: BaseException) -> str:
    """The problem text of a connection that failed, with the cause the SDK wrapped."""
    cause = exc.__cause__
    return f"connection failed: {type(cause).__name__}: {cause}" if cause else "connection failed"


def tidy_problem(text: str, secrets: Iterable[str]) -> str:
    """``text`` as one short, secret-free line (module docstring). Pure."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > MAX_PROBLEM_CHARS:
        text = text[: MAX_PROBLEM_CHARS - 3] + "..."
    return text


def log_model_failure(log: FilteringBoundLogger, error: ModelError, started: float) -> None:
    """Log ``model_call_failed`` for a call started at ``started`` (``anyio.current_time``)."""
    log.warning(
        "model_call_failed",
        model=error.model,
        status=error.status,
        retryable=error.retryable,
        problem=error.problem,
        latency_ms=(anyio.current_time() - started) * 1000.0,
    )
