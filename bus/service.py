"""A ``nats.micro`` service: how the daemon's API is served and found.

``open_service`` registers a service (``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS``
answer for it, with its name, version and metadata) and one endpoint per subject given,
each calling ``handler`` with an ``Envelope``; the handler answers with
``Bus.respond(envelope, ...)`` whenever it likes (the API answers in a task of its own, so
a slow ``cancel`` never holds up a ``show``). The service stops on exit.

``discover`` asks ``$SRV.PING.<name>`` and gathers every answer: how a client with a NATS
URL and no daemon id finds the daemons on a server.

Not the hot path (the work subjects are): a request here is a person or a script.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import anyio
import nats.micro
from nats.micro.service import EndpointConfig, ServiceConfig
from warden.bus.errors import FAILURES, translate

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.micro.request import Request
    from warden.bus.connection import Envelope

__all__ = ("ServiceIdentity", "discover", "open_service")

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_CLEANUP_TIMEOUT = 5.0
_QUIET_GAP = 0.25  # once one daemon answered, wait this long for the others


@dataclass(frozen=True)
class ServiceIdentity:
    """One running service instance, as its ``$SRV.PING`` reply names it."""

    name: str
    id: str
    version: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def open_service(
    nc: Client, *, name: str, version: str, description: str,
    metadata: Mapping[str, str], endpoints: Mapping[str, str],
    handler: Callable[[Envelope], Awaitable[None]],
) -> AsyncIterator[str]:
    """Serve ``endpoints`` (endpoint name → subject) as service ``name``; yields the
    service instance's id. Raises ``BusError`` when a subscription fails, ``ValueError``
    for a name or version ``nats.micro`` refuses (version must be semver)."""
    from warden.bus.connection import Envelope

    async def deliver(request: Request) -> None:
        msg: Msg = request._msg  # the reply subject; Request does not expose it
        await handler(Envelope(subject=msg.subject, data=msg.data,
                               headers=msg.headers or _NO_HEADERS, reply=msg.reply))

    config = ServiceConfig(name=name, version=version, description=description,
                           metadata=dict(metadata))
    try:
        service = await nats.micro.add_service(nc, config)
        for endpoint, subject in endpoints.items():
            await service.add_endpoint(EndpointConfig(name=endpoint, subject=subject,
                                                      handler=deliver))
    except FAILURES as exc:
        raise translate(exc, operation="start service", subject=name) from exc
    try:
        yield service.id
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT):
            with contextlib.suppress(*FAILURES):
                await service.stop()


async def discover(nc: Client, subject: str, *, timeout: float) -> list[ServiceIdentity]:
    """Every service answering a ping on ``subject`` (``$SRV.PING.<name>``).

    Waits up to ``timeout`` for the first answer, then until none came for 0.25 s (a
    ping has no "last reply" to wait for). Answers that are not a ping reply are skipped.
    A cancellation point; raises ``BusError``.
    """
    found: list[ServiceIdentity] = []
    arrived = [anyio.Event()]  # set by each answer; replaced while waiting for the next

    async def on_reply(msg: Msg) -> None:
        try:
            record = json.loads(msg.data)
            found.append(ServiceIdentity(
                name=str(record["name"]), id=str(record["id"]),
                version=str(record.get("version", "")),
                metadata={str(k): str(v) for k, v in (record.get("metadata") or {}).items()},
            ))
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        arrived[0].set()

    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=on_reply)
        try:
            await nc.publish(subject, b"", reply=inbox)
            with anyio.move_on_after(timeout):
                await arrived[0].wait()
            while arrived[0].is_set():
                arrived[0] = anyio.Event()
                with anyio.move_on_after(_QUIET_GAP):
                    await arrived[0].wait()
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(*FAILURES):
                await sub.unsubscribe()
    except FAILURES as exc:
        raise translate(exc, operation="discover", subject=subject) from exc
    return found
