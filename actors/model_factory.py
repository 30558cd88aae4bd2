"""Which model client serves a daemon or a worker: ``build_model`` from the settings.

Kept apart from ``model.py`` because it imports the clients, and the clients import
``model.py`` (for ``ModelRequest`` and ``ModelReply``): with the factory there, the
protocol module and its implementations imported each other. ``AnthropicModel`` and
``OpenAIModel`` are imported only when asked for, so the scripted path never loads an SDK.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from warden.actors.errors import ScriptError
from warden.actors.model import Model
from warden.actors.scripted_model import ScriptedModel, load_scripts
from warden.config import ConfigError, Settings

__all__ = ("build_model",)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def build_model(settings: Settings, *, api_key: str | None,
                environ: Mapping[str, str] | None = None) -> Model:
    """The model client the settings ask for; does not block.

    ``provider = "auto"`` picks anthropic when ``api_key`` (Anthropic's) is set and the
    scripted model otherwise. ``provider = "openai"`` reads its key from ``environ``
    (default ``os.environ``) under the name ``models.openai_api_key_env``. Raises
    ``ConfigError`` when anthropic is asked for without a key, when OpenAI's own API is
    (no ``models.openai_base_url``) without one, for a variable name that cannot be one,
    or when a script file of the scripted model cannot be loaded (key
    ``models.script_files``, the file as its value): all are the user's settings, so all
    are config errors.
    """
    provider = settings.models.provider
    if provider == "openai":
        return _openai_model(settings, os.environ if environ is None else environ)
    if provider == "auto":
        provider = "anthropic" if api_key else "scripted"
    if provider == "anthropic":
        if not api_key:
            raise ConfigError("models.provider", "anthropic", "needs ANTHROPIC_API_KEY to be set")
        from warden.actors.anthropic_model import AnthropicModel

        return AnthropicModel(
            api_key=api_key,
            base_url=settings.models.anthropic_base_url,
            timeout=settings.models.timeout_s,
            max_retries=settings.models.max_retries,
            prompt_caching=settings.models.prompt_caching,
        )
    try:
        scenarios = load_scripts(settings.models.script_files)
    except ScriptError as exc:
        raise ConfigError("models.script_files", exc.source, exc.problem) from exc
    return ScriptedModel(latency_ms=settings.models.scripted_latency_ms, scenarios=scenarios)


def _openai_model(settings: Settings, environ: Mapping[str, str]) -> Model:
    models = settings.models
    key_env = models.openai_api_key_env
    if not _ENV_NAME.fullmatch(key_env):
        raise ConfigError("models.openai_api_key_env", key_env,
                          "must be the name of an environment variable")
    api_key = environ.get(key_env) or None
    if api_key is None and models.openai_base_url is None:
        raise ConfigError("models.provider", "openai",
                          f"OpenAI's own API (models.openai_base_url unset) needs {key_env} "
                          "to be set")
    from warden.actors.openai_model import OpenAIModel

    return OpenAIModel(api_key=api_key, base_url=models.openai_base_url,
                       timeout=models.timeout_s, max_retries=models.max_retries)
