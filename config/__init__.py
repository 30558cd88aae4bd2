"""warden's typed settings: load them with ``load_settings``."""

from __future__ import annotations

from warden.config.errors import ConfigError, ConfigFileError, ConfigVariableError
from warden.config.loading import load_settings, validate
from warden.config.mcp import McpServerSettings, McpSettings, McpToolSettings
from warden.config.policy import PolicySettings, ToolPolicy
from warden.config.rate_limits import EndpointLimit, RateLimitSettings, check_rate_limits
from warden.config.settings import (
    DEFAULT_TENANT,
    ROLES,
    TENANT_PATTERN,
    ApprovalSettings,
    BreakerSettings,
    BudgetSettings,
    IntakeSettings,
    LimitSettings,
    ModelSettings,
    NatsSettings,
    PriceEntry,
    PricingSettings,
    Risk,
    RoleSettings,
    SandboxSettings,
    Settings,
    SupervisionSettings,
    TenantBudget,
    ToolSettings,
    TracingSettings,
)
from warden.config.webhooks import WebhookSettings, check_webhooks

__all__ = (
    "DEFAULT_TENANT",
    "ROLES",
    "TENANT_PATTERN",
    "ApprovalSettings",
    "BreakerSettings",
    "BudgetSettings",
    "ConfigError",
    "ConfigFileError",
    "ConfigVariableError",
    "EndpointLimit",
    "IntakeSettings",
    "LimitSettings",
    "McpServerSettings",
    "McpSettings",
    "McpToolSettings",
    "ModelSettings",
    "NatsSettings",
    "PolicySettings",
    "PriceEntry",
    "PricingSettings",
    "RateLimitSettings",
    "Risk",
    "RoleSettings",
    "SandboxSettings",
    "Settings",
    "SupervisionSettings",
    "TenantBudget",
    "ToolPolicy",
    "ToolSettings",
    "TracingSettings",
    "WebhookSettings",
    "check_rate_limits",
    "check_webhooks",
    "load_settings",
    "validate",
)
