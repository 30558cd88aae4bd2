"""``ModelRouter`` and ``build_model``'s per-model endpoints (``[models.endpoints]``)."""

from __future__ import annotations

import pytest
from warden.actors.anthropic_model import AnthropicModel
from warden.actors.model import ModelReply, ModelRequest
from warden.actors.model_factory import build_model
from warden.actors.model_router import ModelRouter
from warden.actors.openai_model import OpenAIModel
from warden.actors.scripted_model import ScriptedModel
from warden.actors.tracing import provider_of
from warden.bus.wire import Message, TextBlock, Usage
from warden.config import ConfigError, Settings, load_settings

pytestmark = pytest.mark.anyio

LOCAL = "http://127.0.0.1:8000/v1"


class Named:
    """A fake client that answers with its own name and counts its closes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        return ModelReply(content=[TextBlock(text=self.name)], stop_reason="end_turn",
                          usage=Usage(), model=request.model)

    async def aclose(self) -> None:
        self.closed += 1


def call(model: str) -> ModelRequest:
    return ModelRequest(model=model, system="", max_tokens=1,
                        messages=[Message(role="user", content=[TextBlock(text="hi")])])


async def test_each_model_goes_to_its_client_and_every_other_to_the_default() -> None:
    default, local = Named("default"), Named("local")
    router = ModelRouter(default, {"qwen": local, "llama": local})
    answers = [(await router.complete(call(model))).text for model in ("qwen", "llama", "other")]
    assert answers == ["local", "local", "default"]
    await router.aclose()
    assert (default.closed, local.closed) == (1, 1)  # a shared client is closed once


def test_a_call_is_traced_with_the_provider_of_the_client_that_serves_it() -> None:
    default, local = Named("default"), Named("local")
    default.provider, local.provider = "anthropic", "openai"  # type: ignore[attr-defined]
    router = ModelRouter(default, {"qwen": local})
    assert provider_of(router, "qwen") == "openai"
    assert provider_of(router, "claude-sonnet-4-6") == provider_of(router) == "anthropic"


def with_endpoints(endpoints: dict[str, object], **models: object) -> Settings:
    values: dict[tuple[str, ...], object] = {("models", "endpoints"): endpoints}
    for key, value in models.items():
        values[("models", key)] = value
    return load_settings(env={}, overrides=values)


async def test_the_factory_builds_one_client_per_endpoint_over_the_default() -> None:
    settings = with_endpoints({
        "qwen": {"base_url": LOCAL}, "llama": {"base_url": LOCAL},
        "gpt-5": {"api_key_env": "MY_OPENAI_KEY"},
        "claude-opus-4-5": {"provider": "anthropic", "api_key_env": "OTHER_ANTHROPIC_KEY"},
    }, provider="scripted")
    model = build_model(settings, api_key=None,
                        environ={"MY_OPENAI_KEY": "sk-o", "OTHER_ANTHROPIC_KEY": "sk-a"})
    assert isinstance(model, ModelRouter)
    assert isinstance(model.client_for("claude-sonnet-4-6"), ScriptedModel)
    assert model.client_for("qwen") is model.client_for("llama")
    assert isinstance(model.client_for("qwen"), OpenAIModel)
    assert isinstance(model.client_for("gpt-5"), OpenAIModel)
    assert model.client_for("gpt-5") is not model.client_for("qwen")
    assert isinstance(model.client_for("claude-opus-4-5"), AnthropicModel)
    assert "sk-o" not in repr(model) and "sk-a" not in repr(model)
    await model.aclose()


@pytest.mark.parametrize(("endpoint", "key"), [
    ({"provider": "anthropic", "base_url": LOCAL}, "models.endpoints.m.api_key_env"),
    ({"provider": "openai"}, "models.endpoints.m.base_url"),
    ({"base_url": LOCAL, "api_key_env": "1BAD"}, "models.endpoints.m.api_key_env"),
])
def test_an_endpoint_that_cannot_be_called_is_a_config_error_naming_its_key(
        endpoint: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_model(with_endpoints({"m": endpoint}, provider="scripted"), api_key=None,
                    environ={})
    assert caught.value.key == key


def test_an_unknown_endpoint_key_is_refused_when_loading() -> None:
    with pytest.raises(ConfigError):
        with_endpoints({"m": {"base_url": LOCAL, "api_key": "sk-inline"}})
