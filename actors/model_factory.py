"""Which model client serves a daemon or a worker: ``build_model`` from the settings.

Kept apart from ``model.py`` because it imports the clients, and the clients import
``model.py`` (for ``ModelRequest`` and ``ModelReply``): with the factory there, the
protocol module and its implementations imported each other. ``AnthropicModel`` is
imported only when asked for, so the scripted path never loads the SDK.
"""

from __future__ import annotations

from warden.actors.errors import ScriptError
from warden.actors.model import Model
from warden.actors.scripted_model import ScriptedModel, load_scripts
from warden.config import ConfigError, Settings

__all__ = ("build_model",)


def build_model(settings: Settings, *, api_key: str | None) -> Model:
    """The model client the settings ask for; does not block.

    ``provider = "auto"`` picks anthropic when ``api_key`` is set and the scripted model
    otherwise. Raises ``ConfigError`` when anthropic is asked for without a key, or when
    a script file of the scripted model cannot be loaded (key ``models.script_files``,
    the file as its value): both are the user's settings, so both are config errors.
    """
    provider = settings.models.provider
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
