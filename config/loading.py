"""Loading settings: shipped defaults, then a TOML file, then ``WARDEN_*`` environment.

Precedence, lowest first: ``defaults.toml`` shipped in this package; the file named by
``--config`` or ``WARDEN_CONFIG`` (merged key by key, tables recursively); environment
variables; explicit overrides from the command line. Environment names are
``WARDEN_<SECTION>__<KEY>`` (``WARDEN_LIMITS__RUN_BUDGET_USD=0.1``) plus three short
forms: ``WARDEN_DATA_DIR``, ``WARDEN_NATS_URL`` and ``WARDEN_SCRIPTED_LATENCY_MS``, and
``WARDEN_NATS_<KEY>`` for the NATS credentials (``WARDEN_NATS_CREDS``, ``..._NKEY_SEED``,
``..._USER``, ``..._PASSWORD``, ``..._TOKEN``, ``..._TLS_CA``, ``..._TLS_CERT``,
``..._TLS_KEY``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import msgspec
from warden.config.errors import ConfigError, ConfigFileError
from warden.config.settings import Settings

_SHORT_FORMS: dict[str, tuple[str, ...]] = {
    "WARDEN_DATA_DIR": ("data_dir",),
    "WARDEN_NATS_URL": ("nats", "url"),
    # NATS credentials and TLS, under the names NATS users know (``nats.*`` keys).
    **{f"WARDEN_NATS_{key.upper()}": ("nats", key) for key in (
        "creds", "nkey_seed", "user", "password", "token", "tls_ca", "tls_cert", "tls_key")},
    "WARDEN_SCRIPTED_LATENCY_MS": ("models", "scripted_latency_ms"),
}
_NOT_SETTINGS = {"WARDEN_CONFIG"}
_PATH_IN_ERROR = re.compile(r"at `\$\.?(?P<path>[^`]*)`")

Overrides = Mapping[tuple[str, ...], object]


def _defaults() -> dict[str, object]:
    text = resources.files("warden.config").joinpath("defaults.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _read_file(path: str) -> dict[str, object]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(path, f"cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(path, f"is not valid TOML: {exc}") from exc


def _merge(base: dict[str, object], top: Mapping[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, Mapping):
            merged[key] = _merge(below, value)
        else:
            merged[key] = value
    return merged


def _set(tree: dict[str, object], path: tuple[str, ...], value: object) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _env_overrides(env: Mapping[str, str]) -> dict[tuple[str, ...], object]:
    found: dict[tuple[str, ...], object] = {}
    for name, value in env.items():
        if not name.startswith("WARDEN_") or name in _NOT_SETTINGS:
            continue
        if name in _SHORT_FORMS:
            found[_SHORT_FORMS[name]] = value
        elif "__" in name:
            path = tuple(p.lower() for p in name.removeprefix("WARDEN_").split("__"))
            found[path] = value
    return found


def _dotted(path: str) -> str:
    return path.replace("[", ".").replace("]", "").replace("'", "").replace('"', "")


def _value_at(tree: Mapping[str, object], dotted: str) -> object:
    node: object = tree
    for part in dotted.split("."):
        if not part:
            continue
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node


def load_settings(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> Settings:
    """Build the settings from defaults, ``path``, ``env`` and ``overrides``.

    Does not block on anything but reading the file. Raises ``ConfigError`` naming the
    dotted key and the bad value for an unknown key, a wrong type or a value out of
    range, and ``ConfigFileError`` when the file cannot be read or parsed.
    """
    env = os.environ if env is None else env
    tree = _defaults()
    path = path or env.get("WARDEN_CONFIG")
    if path:
        tree = _merge(tree, _read_file(path))
    for key_path, value in {**_env_overrides(env), **dict(overrides or {})}.items():
        if value is not None:
            _set(tree, key_path, value)
    try:
        settings = msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _PATH_IN_ERROR.search(message)
        dotted = _dotted(match.group("path")) if match else "<root>"
        problem = _PATH_IN_ERROR.sub("", message).rstrip(" -")
        if problem.startswith("Object contains unknown field"):
            unknown = problem.split("`")[1] if "`" in problem else "?"
            dotted = f"{dotted}.{unknown}" if dotted else unknown
            raise ConfigError(dotted, _value_at(tree, dotted), "unknown key") from exc
        raise ConfigError(dotted, _value_at(tree, dotted), problem) from exc
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Check what the types alone cannot: ranges, and that every model has a price.

    Raises ``ConfigError`` naming the first bad key.
    """
    limits = settings.limits
    for name in (
        "max_steps_per_run",
        "max_turns_per_step",
        "max_steps_per_worker",
        "plan_attempts",
        "max_task_bytes",
    ):
        value = getattr(limits, name)
        if value < 1:
            raise ConfigError(f"limits.{name}", value, "must be at least 1")
    if limits.step_retries < 0:
        raise ConfigError("limits.step_retries", limits.step_retries, "must be >= 0")
    if settings.intake.max_deliveries < 1:
        raise ConfigError(
            "intake.max_deliveries", settings.intake.max_deliveries, "must be >= 1"
        )
    for name in ("run_budget_usd", "step_timeout_s"):
        value = getattr(limits, name)
        if value <= 0:
            raise ConfigError(f"limits.{name}", value, "must be greater than 0")
    models = settings.models
    if models.attempts < 1:
        raise ConfigError("models.attempts", models.attempts, "must be at least 1")
    if models.max_retries < 0:
        raise ConfigError("models.max_retries", models.max_retries, "must be >= 0")
    for name in ("timeout_s", "patience_s", "retry_after_cap_s"):
        value = getattr(models, name)
        if value <= 0:
            raise ConfigError(f"models.{name}", value, "must be greater than 0")
    if settings.models.scripted_latency_ms < 0:
        raise ConfigError(
            "models.scripted_latency_ms", settings.models.scripted_latency_ms, "must be >= 0"
        )
    if settings.breaker.failure_threshold < 1:
        raise ConfigError(
            "breaker.failure_threshold", settings.breaker.failure_threshold, "must be >= 1"
        )
    if settings.breaker.half_open_probes < 1:
        raise ConfigError(
            "breaker.half_open_probes", settings.breaker.half_open_probes, "must be >= 1"
        )
    if not 0 <= settings.nats.port <= 65535:
        raise ConfigError("nats.port", settings.nats.port, "must be between 0 and 65535")
    prices = settings.pricing.models
    if settings.models.planner not in prices:
        raise ConfigError(
            "models.planner", settings.models.planner, "has no entry in pricing.models"
        )
    if not settings.roles:
        raise ConfigError("roles", {}, "at least one worker role is needed")
    for role, spec in settings.roles.items():
        if spec.model not in prices:
            raise ConfigError(f"roles.{role}.model", spec.model, "has no entry in pricing.models")
        if spec.concurrency < 1:
            raise ConfigError(f"roles.{role}.concurrency", spec.concurrency, "must be >= 1")
