"""``ModelRouter``: one ``Model`` over several clients, each model name to its endpoint.

Built by ``model_factory.build_model`` when ``[models.endpoints."<model>"]`` names where
some models are served: a call of such a model goes to its endpoint's client, any other to
the default client (``models.provider``'s). So one daemon or worker mixes providers (an
Anthropic planner, a role served by a local vLLM), and a fallback chain can end in a local
model. Routing is by the request's ``model`` only: a dict lookup per call, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from warden.actors.model import Model, ModelReply, ModelRequest

__all__ = ("ModelRouter",)


class ModelRouter:
    """A ``Model`` that hands each call to the client of its model (``routes``), else to
    ``default``. The clients are owned: ``aclose`` closes each once."""

    def __init__(self, default: Model, routes: Mapping[str, Model]) -> None:
        self._default = default
        self._routes = dict(routes)
        self.provider = str(getattr(default, "provider", "unknown"))
        """``gen_ai.provider.name`` of the process's spans: the default client's."""

    def __repr__(self) -> str:
        routes = ", ".join(f"{name!r}: {client!r}" for name, client in sorted(self._routes.items()))
        return f"ModelRouter(default={self._default!r}, routes={{{routes}}})"

    def client_for(self, model: str) -> Model:
        """The client that serves ``model``. Pure."""
        return self._routes.get(model, self._default)

    async def complete(self, request: ModelRequest) -> ModelReply:
        """``complete`` of the client of ``request.model`` (its errors, its deadline)."""
        return await self._routes.get(request.model, self._default).complete(request)

    async def aclose(self) -> None:
        """Close every client once, the default last. Idempotent as the clients are."""
        seen: set[int] = set()
        for client in [*self._routes.values(), self._default]:
            if id(client) not in seen:
                seen.add(id(client))
                await client.aclose()
