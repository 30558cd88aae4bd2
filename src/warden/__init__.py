"""warden: an actor-model supervisor for LLM agents — supervised, durable, bounded.

The repository's top-level folders are installed under this namespace (``pyproject.toml``
maps them with setuptools' ``package-dir``), so warden never squats a name an application
beside it uses:

- :mod:`warden.supervisor` — the daemon, supervision tree, run supervisor, journal, CLI;
- :mod:`warden.actors` — the actor base, workers, tools, model clients;
- :mod:`warden.bus` — everything NATS;
- :mod:`warden.config` — typed settings and their loading.

``python -m warden`` is the ``warden`` command.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("warden")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ("__version__",)
