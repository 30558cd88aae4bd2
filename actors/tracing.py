"""Traces of runs: the switch, this process's one tracer, and the model's provider name.

The contract:

- **Off costs nothing.** ``tracer()`` is ``None`` unless ``open_tracing`` turned tracing
  on in this process; every place that makes a span asks it first and, given ``None``,
  builds nothing (no span, no header, no attribute). Off, OpenTelemetry is not even
  imported (``test_with_tracing_off_opentelemetry_is_never_imported``): the SDK lives in
  ``otel_tracing.py``, imported only when tracing starts.
- **On or off.** ``tracing_wanted``: on with ``[tracing] enabled = true``
  (``WARDEN_TRACING__ENABLED=true``) or when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; off, whatever else says, with
  ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``.
- **One tracer per process**, set for the life of ``open_tracing`` (the daemon's, or a
  ``warden worker``'s): spans go through a ``BatchSpanProcessor`` to the OTLP/HTTP
  exporter the standard ``OTEL_*`` variables configure, and leaving ``open_tracing``
  flushes them (off the event loop) before the process goes on shutting down.
- **Where spans are made** (names in ``genai_attributes.py``): the run supervisor makes
  the run's root span and a span per step attempt, the gate adds policy decisions and
  approval waits as events, ``execute_turn`` and ``execute_tool`` (in whichever process
  runs them) make the ``chat`` and ``execute_tool`` spans, and the trace context crosses
  NATS in the work request's headers (W3C ``traceparent``): ``NatsDispatcher`` injects,
  ``Worker`` extracts.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import structlog

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from warden.actors.otel_tracing import RunTracer
    from warden.config import TracingSettings

__all__ = ("open_tracing", "provider_of", "tracer", "tracing_wanted")

log = structlog.get_logger("warden.tracing")

_tracer: RunTracer | None = None

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracer() -> RunTracer | None:
    """This process's tracer while tracing is on, else ``None``. Never blocks."""
    return _tracer


def tracing_wanted(settings: TracingSettings, environ: Mapping[str, str]) -> bool:
    """Whether traces are to be exported (the rules in the module docstring). Pure."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return settings.enabled or any(environ.get(name, "").strip() for name in _ENDPOINTS)


def _endpoint(environ: Mapping[str, str]) -> str:
    """Where the spans go, as the exporter will read it, without any user or password."""
    url = (environ.get(_ENDPOINTS[1], "").strip()
           or environ.get(_ENDPOINTS[0], "").strip() or "http://localhost:4318")
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.hostname or "" if parts.port is None
                          else f"{parts.hostname}:{parts.port}").geturl()


def provider_of(model: object, name: str | None = None) -> str:
    """The ``gen_ai.provider.name`` of a model client: its ``provider`` (``anthropic``,
    ``openai``, ``warden.scripted``), ``unknown`` for a client that names none; of a
    ``ModelRouter``, the provider of the client that serves the model ``name``."""
    client_for = getattr(model, "client_for", None)
    if name is not None and callable(client_for):
        model = client_for(name)
    return str(getattr(model, "provider", "unknown"))


@asynccontextmanager
async def open_tracing(
    settings: TracingSettings, *, service: str, provider: str,
    environ: Mapping[str, str] | None = None, exporter: SpanExporter | None = None,
) -> AsyncIterator[RunTracer | None]:
    """Turn tracing on for this process while in the context, if ``tracing_wanted``;
    yields the tracer, or ``None`` (then nothing happens at all).

    ``service`` is the ``service.name`` unless ``OTEL_SERVICE_NAME`` (or
    ``OTEL_RESOURCE_ATTRIBUTES``) names one; ``provider`` is the ``gen_ai.provider.name``
    of the process's model, for the step spans. ``exporter`` replaces the OTLP/HTTP one
    (tests: an ``InMemorySpanExporter``). Leaving flushes and shuts the exporter down in
    a worker thread (bounded by ``OTEL_BSP_EXPORT_TIMEOUT``), and restores the tracer
    that was on before. Raises what the SDK raises for bad ``OTEL_*`` values.
    """
    global _tracer
    environ = os.environ if environ is None else environ
    if not tracing_wanted(settings, environ):
        yield None
        return
    from warden.actors.otel_tracing import RunTracer

    started = RunTracer.start(service=service, provider=provider,
                              capture_content=settings.capture_content, exporter=exporter)
    log.info("tracing_started", service=service, endpoint=_endpoint(environ),
             capture_content=settings.capture_content)
    previous, _tracer = _tracer, started
    try:
        yield started
    finally:
        _tracer = previous
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(started.shutdown)
