"""The wait an HTTP ``retry-after`` header asks for: one reading, for every HTTP client of
warden (the Anthropic client's 429s and 529s, the approval webhooks' 429s and 503s)."""

from __future__ import annotations

import email.utils
import math

__all__ = ("retry_after_s",)


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
