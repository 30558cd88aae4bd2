"""Loading settings: shipped defaults, then a TOML file, then ``WARDEN_*`` environment.

Precedence, lowest first: ``defaults.toml`` shipped in this package; the file named by
``--config`` or ``WARDEN_CONFIG`` (merged key by key, tables recursively); environment
variables; explicit overrides from the command line.

Every ``WARDEN_*`` variable sets a key or is refused (``ConfigError`` naming it), but
those of ``NOT_SETTINGS``. Its name is the key's path: ``WARDEN_<KEY>`` for a top-level
key (``WARDEN_LOCAL_WORKERS``, ``WARDEN_DATA_DIR``), ``WARDEN_<SECTION>_<KEY>`` for a
section's (``WARDEN_NATS_URL``, ``WARDEN_LIMITS_RUN_BUDGET_USD``), ``WARDEN_<A>__<B>__<C>``
for any (``WARDEN_ROLES__CODE__MODEL``); plus the old short form
``WARDEN_SCRIPTED_LATENCY_MS``. The mapping is derived from ``Settings``, so a new field
has its variable at once. A value is read as the key's type: a boolean from ``true``/
``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``), a list or table as JSON,
numbers and strings as written.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import cast

import msgspec
from warden.config.budgets import check_budgets
from warden.config.errors import ConfigError, ConfigFileError, ConfigVariableError
from warden.config.mcp import check_mcp
from warden.config.policy import check_policy
from warden.config.rate_limits import check_rate_limits
from warden.config.settings import RoleSettings, Settings, ToolSettings

_ALIASES: dict[str, tuple[str, ...]] = {
    "WARDEN_SCRIPTED_LATENCY_MS": ("models", "scripted_latency_ms"),
}
"""Short names kept from before the generic mapping (``WARDEN_MODELS_SCRIPTED_LATENCY_MS``
is the same key)."""
NOT_SETTINGS: frozenset[str] = frozenset({
    "WARDEN_CONFIG",     # the settings file (this module)
    "WARDEN_CRASH_AT",   # crash points of the chaos tests (config/crashpoints.py)
    "WARDEN_UNLOCKED",   # `make test-latest`: the suite on unlocked versions (tests/)
    "WARDEN_BENCH_LOG",  # log level of the benchmark's warden (bench/warden_triad.py)
})
"""``WARDEN_*`` variables that are not settings: read elsewhere, never refused here."""
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_SETTINGS_INFO = cast(msgspec.inspect.StructType, msgspec.inspect.type_info(Settings))
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


def _child(node: msgspec.inspect.Type, part: str) -> msgspec.inspect.Type | None:
    """The type one key below ``node`` (a field of a Struct, any key of a dict), or
    ``None`` if ``node`` has no such key."""
    if isinstance(node, msgspec.inspect.StructType):
        return next((f.type for f in node.fields if f.encode_name == part), None)
    if isinstance(node, msgspec.inspect.DictType):
        return node.value_type
    return None


def _type_at(path: tuple[str, ...]) -> msgspec.inspect.Type | None:
    node: msgspec.inspect.Type | None = _SETTINGS_INFO
    for part in path:
        node = None if node is None else _child(node, part)
    return node


def _is_scalar(node: msgspec.inspect.Type) -> bool:
    return not isinstance(node, (msgspec.inspect.StructType, msgspec.inspect.DictType))


def _resolve(name: str) -> tuple[str, ...]:
    """The settings key the variable ``name`` (``WARDEN_...``) sets.

    ``WARDEN_<KEY>`` sets a top-level key (``WARDEN_LOCAL_WORKERS``), ``WARDEN_<SECTION>_
    <KEY>`` a key of a section (``WARDEN_NATS_URL``), ``WARDEN_<A>__<B>__<C>`` any key,
    dict entries too (``WARDEN_ROLES__CODE__MODEL``). Generic over ``Settings``: a field
    added there gets its variables with it. Raises ``ConfigError`` naming the variable
    when it sets no key, or could mean two.
    """
    if name in _ALIASES:
        return _ALIASES[name]
    rest = name.removeprefix("WARDEN_").lower()
    if "__" in rest:
        path = tuple(rest.split("__"))
        node: msgspec.inspect.Type | None = _SETTINGS_INFO
        for depth, part in enumerate(path):
            below = None if node is None else _child(node, part)
            if below is None:
                raise ConfigVariableError(
                    name, f"names unknown key {'.'.join(path[: depth + 1])!r}")
            node = below
        return path
    found: list[tuple[str, ...]] = []
    for field in _SETTINGS_INFO.fields:
        key = field.encode_name
        if rest == key and _is_scalar(field.type):
            found.append((key,))
        elif rest.startswith(key + "_") and isinstance(field.type, msgspec.inspect.StructType):
            inner = rest[len(key) + 1:]
            below = _child(field.type, inner)
            if below is not None and _is_scalar(below):
                found.append((key, inner))
    if len(found) == 1:
        return found[0]
    if found:
        raise ConfigVariableError(name, "could set " + " or ".join(
            ".".join(p) for p in found) + ": name the key with __ (WARDEN_<SECTION>__<KEY>)")
    close = difflib.get_close_matches(name, [*_variable_names(), *NOT_SETTINGS], n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigVariableError(
        name,
        f"is not a setting ({hint}WARDEN_<KEY>, WARDEN_<SECTION>_<KEY> or "
        f"WARDEN_<A>__<B>__<C> name a key; {', '.join(sorted(NOT_SETTINGS))} are not keys)",
    )


def _variable_names() -> list[str]:
    """The short name of every top-level key and every key of a section."""
    names: list[str] = []
    for field in _SETTINGS_INFO.fields:
        if _is_scalar(field.type):
            names.append(f"WARDEN_{field.encode_name.upper()}")
        elif isinstance(field.type, msgspec.inspect.StructType):
            names.extend(f"WARDEN_{field.encode_name.upper()}_{inner.encode_name.upper()}"
                         for inner in field.type.fields if _is_scalar(inner.type))
    return names


def _parse(name: str, path: tuple[str, ...], text: str) -> object:
    """The variable's text as a value of the key's type: booleans by word, lists,
    tables and sections as JSON, the rest left to ``msgspec.convert``."""
    node = _type_at(path)
    if isinstance(node, msgspec.inspect.BoolType):
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigError(".".join(path), text,
                          f"must be true or false (from {name})")
    if isinstance(node, (msgspec.inspect.ListType, msgspec.inspect.DictType,
                         msgspec.inspect.StructType)):
        try:
            return msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise ConfigError(".".join(path), text,
                              f"must be JSON here (from {name}): {exc}") from exc
    return text


def _env_overrides(env: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, object]]:
    """Every ``WARDEN_*`` variable of ``env`` as ``{key path: (variable, value)}``.

    Raises ``ConfigError`` for a variable that sets no key (outside ``NOT_SETTINGS``)
    and for a value the key's type cannot take."""
    found: dict[tuple[str, ...], tuple[str, object]] = {}
    for name, text in sorted(env.items()):
        if not name.startswith("WARDEN_") or name in NOT_SETTINGS:
            continue
        path = _resolve(name)
        found[path] = (name, _parse(name, path, text))
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
    from_env = _env_overrides(env)
    origins = {".".join(path): name for path, (name, _) in from_env.items()}
    values = {path: value for path, (_, value) in from_env.items()}
    for key_path, value in {**values, **dict(overrides or {})}.items():
        if value is not None:
            _set(tree, key_path, value)
    # msgspec names a dict's key `[...]` in its error path: each entry of a keyed section
    # is converted alone first, so an error names it (`tools.refund.risk`).
    for section, kind in _KEYED_SECTIONS:
        entries = tree.get(section)
        for name, entry in entries.items() if isinstance(entries, dict) else ():
            if section == "roles" and isinstance(entry, dict) \
                    and entry.get("auto_approve") == "high":
                raise ConfigError(f"roles.{name}.auto_approve", "high",
                                  "must be 'low' or 'medium': a high-risk call always "
                                  "needs an approval (README, \"Approvals\")")
            try:
                msgspec.convert(entry, kind, strict=False)
            except msgspec.ValidationError as exc:
                raise _validation_error(exc, tree, origins, f"{section}.{name}") from exc
    try:
        settings = msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, tree, origins) from exc
    try:
        validate(settings)
    except ConfigError as exc:
        if exc.key in origins:
            raise ConfigError(exc.key, exc.value,
                              f"{exc.problem} (from {origins[exc.key]})") from exc
        raise
    return settings


_KEYED_SECTIONS: tuple[tuple[str, type[msgspec.Struct]], ...] = (
    ("roles", RoleSettings), ("tools", ToolSettings))


def _validation_error(exc: msgspec.ValidationError, tree: Mapping[str, object],
                      origins: Mapping[str, str], base: str = "") -> ConfigError:
    """``exc`` as a ``ConfigError`` naming the dotted key (under ``base``) and its value."""
    message = str(exc)
    match = _PATH_IN_ERROR.search(message)
    inner = _dotted(match.group("path")) if match else ""
    dotted = ".".join(part for part in (base, inner) if part) or "<root>"
    problem = _PATH_IN_ERROR.sub("", message).rstrip(" -")
    if problem.startswith("Object contains unknown field"):
        unknown = problem.split("`")[1] if "`" in problem else "?"
        dotted = f"{dotted}.{unknown}" if dotted else unknown
        problem = "unknown key"
    if dotted in origins:
        problem = f"{problem} (from {origins[dotted]})"
    return ConfigError(dotted, _value_at(tree, dotted), problem)


def _check_finite(value: object, key: str) -> None:
    """Every number in the settings is finite: TOML and the environment can spell
    ``nan`` and ``inf``, which no limit, price or duration means (``nan`` passes every
    ``<= 0`` check). Raises ``ConfigError`` naming the first key that is not."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, value, "must be a finite number")
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            _check_finite(getattr(value, name), f"{key}.{name}" if key else name)
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_finite(item, f"{key}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{key}[{index}]")


def validate(settings: Settings) -> None:
    """Check what the types alone cannot: ranges, and that every model has a price.

    Raises ``ConfigError`` naming the first bad key.
    """
    _check_finite(settings, "")
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
    models = settings.models
    _check_chain(prices, "models.planner", models.planner, models.planner_fallback)
    if models.synthesizer:
        _check_chain(prices, "models.synthesizer", models.synthesizer,
                     models.synthesizer_fallback)
    elif models.synthesizer_fallback:
        raise ConfigError("models.synthesizer_fallback", models.synthesizer_fallback,
                          "needs models.synthesizer (without it the planner's chain serves)")
    if not settings.roles:
        raise ConfigError("roles", {}, "at least one worker role is needed")
    for role, spec in settings.roles.items():
        _check_chain(prices, f"roles.{role}.model", spec.model, spec.fallback)
        if spec.concurrency < 1:
            raise ConfigError(f"roles.{role}.concurrency", spec.concurrency, "must be >= 1")
        if not 0.0 <= spec.confidence_threshold <= 1.0:
            raise ConfigError(f"roles.{role}.confidence_threshold", spec.confidence_threshold,
                              "must be between 0 (off) and 1")
    check_policy(settings.policy)
    check_mcp(settings.mcp)
    check_budgets(settings.budgets)
    if not settings.approvals.timeout_s > 0:
        raise ConfigError("approvals.timeout_s", settings.approvals.timeout_s,
                          "must be greater than 0")
    _check_observability(settings)
    check_rate_limits(settings.rate_limits)


def _check_observability(settings: Settings) -> None:
    """``[metrics]`` and ``[anomaly]`` (README, "Metrics", "Anomaly flags")."""
    if not settings.metrics.scrape_timeout_s > 0:
        raise ConfigError("metrics.scrape_timeout_s", settings.metrics.scrape_timeout_s,
                          "must be greater than 0")
    anomaly = settings.anomaly
    for name, least in (("baseline_runs", 1), ("min_baseline_runs", 1), ("min_retries", 0),
                        ("repeat_threshold", 0), ("max_pattern_length", 2),
                        ("cross_step_repeats", 0), ("mad_k", 0), ("median_ratio", 1),
                        ("min_duration_s", 0)):
        value = getattr(anomaly, name)
        if value < least:
            raise ConfigError(f"anomaly.{name}", value, f"must be at least {least}")


def _check_chain(prices: Mapping[str, object], key: str, first: str,
                 fallback: Sequence[str]) -> None:
    """A model chain: every model priced (a fallback to an unpriced model could not be
    reserved for), none twice. ``key`` names the first model's setting; a fallback's
    problem names ``<key's section>.<name>_fallback`` or ``.fallback``."""
    fallback_key = key + "_fallback" if key.startswith("models.") else (
        key.rsplit(".", 1)[0] + ".fallback")
    if first not in prices:
        raise ConfigError(key, first, "has no entry in pricing.models")
    seen = {first}
    for model in fallback:
        if model not in prices:
            raise ConfigError(fallback_key, model, "has no entry in pricing.models")
        if model in seen:
            raise ConfigError(fallback_key, model, "is already in the chain")
        seen.add(model)
