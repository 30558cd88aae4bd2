"""Everything NATS: the embedded server, identities and their permissions, credentials,
the connection (core NATS and, through it, JetStream), subjects and wire messages.

The only package that imports ``nats``. It knows nothing of agents.
"""

from __future__ import annotations

from warden.bus import identities, subjects, wire
from warden.bus.connection import (
    Bus,
    BusStatistics,
    Envelope,
    PubAck,
    Subscription,
    TaskConsumer,
    TaskMessage,
    open_bus,
)
from warden.bus.credentials import Credentials
from warden.bus.decoding import InvalidMessage
from warden.bus.embedded import EmbeddedServer, nats_server_binary, open_embedded_server
from warden.bus.errors import (
    BusConnectionError,
    BusError,
    BusTimeoutError,
    CredentialsError,
    EmbeddedServerError,
    JetStreamError,
    NoRespondersError,
    PublishError,
    translate,
)
from warden.bus.lease import Lease
from warden.bus.service import ServiceIdentity

__all__ = (
    "Bus",
    "BusConnectionError",
    "BusError",
    "BusStatistics",
    "BusTimeoutError",
    "Credentials",
    "CredentialsError",
    "EmbeddedServer",
    "EmbeddedServerError",
    "Envelope",
    "InvalidMessage",
    "JetStreamError",
    "Lease",
    "NoRespondersError",
    "PubAck",
    "PublishError",
    "ServiceIdentity",
    "Subscription",
    "TaskConsumer",
    "TaskMessage",
    "identities",
    "nats_server_binary",
    "open_bus",
    "open_embedded_server",
    "subjects",
    "translate",
    "wire",
)
