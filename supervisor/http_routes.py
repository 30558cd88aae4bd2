"""Every route of the daemon's HTTP server (``web.py``), collected in one place.

Each feature that serves over HTTP (the metrics, the dashboard) contributes its routes here,
so ``daemon.py`` builds the server from one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from warden.bus.wire import encoder
from warden.supervisor.dashboard import dashboard_routes
from warden.supervisor.metrics import metrics_routes

if TYPE_CHECKING:
    from warden.supervisor.daemon import Daemon

__all__ = ("http_routes",)


def http_routes(daemon: Daemon) -> list[BaseRoute]:
    """The routes of ``daemon``'s HTTP server."""

    async def healthz(_request: Request) -> Response:
        # What `warden ping` answers, for load balancers and probes that speak HTTP only.
        return Response(encoder.encode(daemon.health()), media_type="application/json")

    return [Route("/healthz", healthz, methods=["GET"]), *dashboard_routes(daemon),
            *metrics_routes(daemon)]
