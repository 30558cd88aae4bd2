"""Checks of ``[budgets]`` that the types alone cannot make (``BudgetSettings``)."""

from __future__ import annotations

import re
import zoneinfo

from warden.config.errors import ConfigError
from warden.config.settings import TENANT_PATTERN, BudgetSettings

__all__ = ("check_budgets",)

_TENANT = re.compile(TENANT_PATTERN)


def check_budgets(budgets: BudgetSettings) -> None:
    """Raise ``ConfigError`` naming the first bad key of ``[budgets]``: a negative limit,
    an unknown time zone, an hour outside 0-23, a fraction outside [0, 1), a tenant name
    that no submission could carry."""
    for name in ("day_usd", "day_tokens", "tenant_day_usd", "tenant_day_tokens",
                 "run_tokens", "step_usd", "step_tokens"):
        value = getattr(budgets, name)
        if value < 0:
            raise ConfigError(f"budgets.{name}", value, "must be >= 0 (0: no limit)")
    for tenant, own in budgets.tenants.items():
        if not _TENANT.fullmatch(tenant):
            raise ConfigError(f"budgets.tenants.{tenant}", tenant,
                              "is not a tenant name (1-64 of [A-Za-z0-9_.-])")
        for name in ("day_usd", "day_tokens"):
            value = getattr(own, name)
            if value is not None and value < 0:
                raise ConfigError(f"budgets.tenants.{tenant}.{name}", value,
                                  "must be >= 0 (0: no limit)")
    try:
        zoneinfo.ZoneInfo(budgets.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError("budgets.timezone", budgets.timezone,
                          "is not a known time zone (an IANA name such as 'UTC' or "
                          "'Europe/Paris')") from exc
    if not 0 <= budgets.day_starts_at_hour <= 23:
        raise ConfigError("budgets.day_starts_at_hour", budgets.day_starts_at_hour,
                          "must be an hour from 0 to 23")
    if not 0.0 <= budgets.downgrade_below < 1.0:
        raise ConfigError("budgets.downgrade_below", budgets.downgrade_below,
                          "must be a fraction from 0 (never) to below 1")
