"""The settings of the rate limiter (``[rate_limits]``), and the checks the types cannot make.

The shape (README, "Rate limits"); the lead's ``Settings`` holds them as ``rate_limits``::

    [rate_limits]
    tenant_rpm = 0          # requests per minute of each tenant, over every model; 0: none
    tenant_tpm = 0          # tokens per minute of each tenant; 0: none
    max_wait_s = 60         # the longest a call waits for capacity before it fails
    window_s = 60           # a bucket holds at most this window's allowance (the burst)

    [rate_limits.models."claude-sonnet-4-6"]
    rpm = 50                # 0: no configured limit (a 429 still sets one: AIMD)
    tpm = 40000

Rates are floats: ``rpm = 300`` with ``window_s = 1`` is 5 requests a second with a burst of 5.
Each problem is one ``ConfigError`` naming the key (``rate_limits.models.m.rpm``).
"""

from __future__ import annotations

import msgspec
from warden.config.errors import ConfigError

__all__ = ("EndpointLimit", "RateLimitSettings", "check_rate_limits")


class EndpointLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The configured limits of one model endpoint (``[rate_limits.models."<model>"]``)."""

    rpm: float = 0.0
    """Requests per minute; 0: none configured (a 429 still lowers one from the rate seen)."""
    tpm: float = 0.0
    """Tokens per minute (prompt estimate plus ``max_tokens``, corrected by the reply's
    usage); 0: none."""


class RateLimitSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Token buckets per model endpoint and per tenant, fair waiting, AIMD on 429
    (``supervisor/rate_limit.py``; README, "Rate limits")."""

    models: dict[str, EndpointLimit] = {}
    """Configured limits per model name; a model not named here has none until a 429."""
    tenant_rpm: float = 0.0
    """Requests per minute of each tenant, over all its runs and models; 0: none."""
    tenant_tpm: float = 0.0
    """Tokens per minute of each tenant; 0: none."""
    max_wait_s: float = 60.0
    """The longest one model call waits for capacity; past it the call fails, naming the
    limit. After a 429 the wait is also bounded by ``models.patience_s``."""
    window_s: float = 60.0
    """A bucket holds at most this window's allowance (the burst it lets through at
    once); the rate an endpoint without a configured limit is lowered from is the one
    observed over this window."""
    aimd_decrease: float = 0.5
    """A 429 multiplies the endpoint's request limit by this (once per round of requests
    sent under the previous limit)."""
    aimd_increase_rpm: float = 1.0
    """Each successful call raises a lowered limit by this many requests per minute, up to
    the configured one (or, with none, the rate it was lowered from, where it is lifted)."""
    aimd_min_rpm: float = 1.0
    """A 429 never lowers a limit below this."""


def check_rate_limits(limits: RateLimitSettings) -> None:
    """Ranges. Raises ``ConfigError`` naming the first bad key."""
    for model, limit in limits.models.items():
        for name in ("rpm", "tpm"):
            value = getattr(limit, name)
            if value < 0:
                raise ConfigError(f"rate_limits.models.{model}.{name}", value,
                                  "must be >= 0 (0: no limit)")
    for name in ("tenant_rpm", "tenant_tpm", "aimd_increase_rpm"):
        value = getattr(limits, name)
        if value < 0:
            raise ConfigError(f"rate_limits.{name}", value, "must be >= 0")
    for name in ("max_wait_s", "window_s", "aimd_min_rpm"):
        value = getattr(limits, name)
        if not value > 0:
            raise ConfigError(f"rate_limits.{name}", value, "must be greater than 0")
    if not 0 < limits.aimd_decrease < 1:
        raise ConfigError("rate_limits.aimd_decrease", limits.aimd_decrease,
                          "must be between 0 and 1 (exclusive)")
