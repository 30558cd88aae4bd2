"""Errors of the config package.

The tree::

    ConfigError              the settings cannot be used; names the key and the bad value
    ├── ConfigFileError      the TOML file is missing or is not valid TOML
    └── ConfigVariableError  a WARDEN_* environment variable sets no key (or could set two)
"""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing, unknown or has a bad value.

    ``key`` is the dotted path of the setting (``limits.max_steps_per_run``), ``value``
    what was given (``None`` when absent), ``problem`` what is wrong with it.
    """

    retryable = False

    def __init__(self, key: str, value: object, problem: str) -> None:
        self.key = key
        self.value = value
        self.problem = problem
        super().__init__(f"config key {key!r} = {value!r}: {problem}")


class ConfigFileError(ConfigError):
    """The config file could not be read or parsed."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__("<file>", path, problem)
        self.path = path


class ConfigVariableError(ConfigError):
    """Raised when a ``WARDEN_*`` environment variable sets no setting, or could mean
    two. ``key`` is the variable's name; its value is not kept, nor said: a mistyped
    name may hold a credential."""

    def __init__(self, name: str, problem: str) -> None:
        self.key = name
        self.value = None
        self.problem = problem
        Exception.__init__(self, f"environment variable {name} {problem}")
