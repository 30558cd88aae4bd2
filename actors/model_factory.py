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
from warden.config.settings import EndpointSettings

__all__ = ("build_model",)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_USUAL_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def build_model(settings: Settings, *, api_key: str | None,
                environ: Mapping[str, str] | None = None) -> Model:
    """The model client the settings ask for; does not block.

    ``provider = "auto"`` picks anthropic when ``api_key`` (Anthropic's) is set and the
    scripted model otherwise. ``provider = "openai"`` reads its key from ``environ``
    (default ``os.environ``) under the name ``models.openai_api_key_env``. With
    ``models.endpoints``, a ``ModelRouter`` sends the models listed there to their own
    endpoints (one client per distinct endpoint and key) and every other to that client.
    Raises ``ConfigError`` when anthropic is asked for without a key, when OpenAI's own
    API is (no base URL) without one, for a variable name that cannot be one, or when a
    script file of the scripted model cannot be loaded (key ``models.script_files``, the
    file as its value): all are the user's settings, so all are config errors.
    """
    env = os.environ if environ is None else environ
    default = _default_model(settings, api_key=api_key, environ=env)
    if not settings.models.endpoints:
        return default
    from warden.actors.model_router import ModelRouter

    clients: dict[tuple[str, str | None, str], Model] = {}
    routes: dict[str, Model] = {}
    for name, endpoint in sorted(settings.models.endpoints.items()):
        where = (endpoint.provider, endpoint.base_url, endpoint.api_key_env)
        if where not in clients:
            clients[where] = _endpoint_model(settings, f"models.endpoints.{name}", endpoint, env)
        routes[name] = clients[where]
    return ModelRouter(default, routes)


def _default_model(settings: Settings, *, api_key: str | None,
                   environ: Mapping[str, str]) -> Model:
    provider = settings.models.provider
    if provider == "openai":
        models = settings.models
        return _endpoint_model(settings, "models", EndpointSettings(
            provider="openai", base_url=models.openai_base_url,
            api_key_env=models.openai_api_key_env), environ)
    if provider == "auto":
        provider = "anthropic" if api_key else "scripted"
    if provider == "anthropic":
        if not api_key:
            raise ConfigError("models.provider", "anthropic", "needs ANTHROPIC_API_KEY to be set")
        return _anthropic_model(settings, api_key=api_key,
                                base_url=settings.models.anthropic_base_url)
    try:
        scenarios = load_scripts(settings.models.script_files)
    except ScriptError as exc:
        raise ConfigError("models.script_files", exc.source, exc.problem) from exc
    return ScriptedModel(latency_ms=settings.models.scripted_latency_ms, scenarios=scenarios)


def _anthropic_model(settings: Settings, *, api_key: str, base_url: str | None) -> Model:
    from warden.actors.anthropic_model import AnthropicModel

    return AnthropicModel(
        api_key=api_key,
        base_url=base_url,
        timeout=settings.models.timeout_s,
        max_retries=settings.models.max_retries,
        prompt_caching=settings.models.prompt_caching,
    )


def _endpoint_model(settings: Settings, section: str, endpoint: EndpointSettings,
                    environ: Mapping[str, str]) -> Model:
    """The client of one endpoint; ``section`` names its settings in errors
    (``models``: the ``openai_*`` keys of ``provider = "openai"``)."""
    top = section == "models"
    key_key = f"{section}.openai_api_key_env" if top else f"{section}.api_key_env"
    key_env = endpoint.api_key_env or _USUAL_KEY_ENV[endpoint.provider]
    if not _ENV_NAME.fullmatch(key_env):
        raise ConfigError(key_key, key_env, "must be the name of an environment variable")
    api_key = environ.get(key_env) or None
    if endpoint.provider == "anthropic":
        if api_key is None:
            raise ConfigError(key_key, key_env, "names no set environment variable: an "
                              "anthropic endpoint needs a key")
        return _anthropic_model(settings, api_key=api_key, base_url=endpoint.base_url)
    if api_key is None and endpoint.base_url is None:
        problem = f"OpenAI's own API (no base URL) needs {key_env} to be set"
        if top:
            raise ConfigError("models.provider", "openai", problem)
        raise ConfigError(f"{section}.base_url", None, problem)
    from warden.actors.openai_model import OpenAIModel

    return OpenAIModel(api_key=api_key, base_url=endpoint.base_url,
                       timeout=settings.models.timeout_s,
                       max_retries=settings.models.max_retries)
