"""warden's typed settings: load them with ``load_settings``."""

from __future__ import annotations

from warden.config.errors import ConfigError, ConfigFileError, ConfigVariableError
from warden.config.loading import load_settings, validate
from warden.config.policy import PolicySettings, ToolPolicy
from warden.config.settings import (
    ROLES,
    BreakerSettings,
    IntakeSettings,
    LimitSettings,
    ModelSettings,
    NatsSettings,
    PriceEntry,
    PricingSettings,
    RoleSettings,
    SandboxSettings,
    Settings,
    SupervisionSettings,
)

__all__ = (
    "ROLES",
    "BreakerSettings",
    "ConfigError",
    "ConfigFileError",
    "ConfigVariableError",
    "IntakeSettings",
    "LimitSettings",
    "ModelSettings",
    "NatsSettings",
    "PolicySettings",
    "PriceEntry",
    "PricingSettings",
    "RoleSettings",
    "SandboxSettings",
    "Settings",
    "SupervisionSettings",
    "ToolPolicy",
    "load_settings",
    "validate",
)
