"""The wait an HTTP ``retry-after`` header asks for: one reading, for every HTTP client of
warden (the Anthropic and OpenAI clients' 429s and 529s, the approval webhooks' 429s and
503s)."""

from __future__ import annotations

import email.utils
import math
from typing import Protocol

__all__ = ("retry_after_of", "retry_after_s")


def retry_after_s(value: str | None, now: float) -> float | None:
    """The wait a ``retry-after`` header asks for, in seconds from ``now`` (unix
    seconds): a number of seconds or an HTTP date; ``None`` when absent or unreadable.
    Pure; never negative."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value.strip()).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class _Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


def retry_after_of(response: object, now: float) -> float | None:
    """The wait a model provider's error ``response`` asks for, in seconds: its
    ``retry-after-ms`` header (which the Anthropic and OpenAI APIs send), else
    ``retry-after`` in seconds or as an HTTP date; ``None`` when absent or unreadable.
    ``response`` is anything with ``headers`` (an SDK's HTTP response). Pure."""
    headers: _Headers | None = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = retry_after_s(millis, now)
        return None if seconds is None else seconds / 1000
    return retry_after_s(headers.get("retry-after"), now)
