"""The tracing switch, its cost when off, the pinned attribute names, and the trace
context a worker takes from a request's headers (``actors/tracing.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv
from structlog.testing import capture_logs
from warden.actors import ScriptedModel, tracing
from warden.actors import genai_attributes as ga
from warden.actors.otel_tracing import trace_id_of
from warden.actors.worker import execute_turn
from warden.bus.wire import Message, TextBlock, TurnRequest
from warden.config import TracingSettings

pytestmark = pytest.mark.anyio

ON = TracingSettings(enabled=True)
OFF = TracingSettings()
ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(("settings", "environ", "wanted"), [
    (OFF, {}, False),
    (ON, {}, True),
    (OFF, ENDPOINT, True),
    (OFF, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    (OFF, {"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
    (ON, {"OTEL_SDK_DISABLED": "true"}, False),
    (OFF, {**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, False),
    (ON, {"OTEL_SDK_DISABLED": "false"}, True),
    (ON, {"OTEL_TRACES_EXPORTER": "none"}, False),
    (ON, {"OTEL_TRACES_EXPORTER": "otlp"}, True),
])
def test_tracing_is_on_when_enabled_or_an_endpoint_is_set_and_never_when_the_sdk_is_disabled(
        settings: TracingSettings, environ: dict[str, str], wanted: bool) -> None:
    assert tracing.tracing_wanted(settings, environ) is wanted


def test_with_tracing_off_opentelemetry_is_never_imported(tmp_path: Path) -> None:
    # It costs ~120 ms of imports per process (every `warden` command, every worker).
    code = (
        "import sys, anyio\n"
        "from warden.supervisor import cli, daemon\n"
        "from warden.actors import ScriptedModel, tracing\n"
        "from warden.actors.worker import execute_turn\n"
        "from warden.bus.wire import Message, TextBlock, TurnRequest\n"
        "from warden.config import TracingSettings\n"
        "async def main():\n"
        "    async with tracing.open_tracing(TracingSettings(), service='t',\n"
        "                                    provider='p', environ={}) as t:\n"
        "        assert t is None and tracing.tracer() is None\n"
        "        reply = await execute_turn(ScriptedModel(), TurnRequest(\n"
        "            run_id='r-1', step=-1, turn=0, role='planner', max_tokens=64,\n"
        "            messages=[Message(role='user', content=[TextBlock(text='hi')])],\n"
        "            model='claude-haiku-4-5', system='s', purpose='plan'), timeout_s=5)\n"
        "        assert reply.error is None, reply.error\n"
        "anyio.run(main)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_gen_ai_key_is_the_locked_semconv_packages() -> None:
    # The pin of genai_attributes.py: each gen_ai.* key we use is spelled as the locked
    # opentelemetry-semantic-conventions spells it (a rename there fails here).
    ours = {name: getattr(ga, name) for name in ga.__all__
            if str(getattr(ga, name)).startswith("gen_ai.")}
    theirs = {value for name, value in vars(semconv).items()
              if name.startswith("GEN_AI_") and isinstance(value, str)}
    assert len(ours) >= 20
    assert {name: key for name, key in ours.items() if key not in theirs} == {}


def test_a_runs_trace_id_is_derived_from_its_id() -> None:
    assert trace_id_of("r-1") == trace_id_of("r-1")
    assert trace_id_of("r-1") != trace_id_of("r-2")
    assert 0 < trace_id_of("r-1") < 2**128


async def test_a_chat_made_under_a_requests_headers_joins_the_senders_trace() -> None:
    exporter = InMemorySpanExporter()
    request = TurnRequest(
        run_id="r-1", step=0, turn=0, role="research", max_tokens=64,
        messages=[Message(role="user", content=[TextBlock(text="hi")])],
        model="claude-haiku-4-5", system="s", purpose="step")
    async with tracing.open_tracing(ON, service="t", provider="p", environ={},
                                    exporter=exporter) as traces:
        assert traces is not None and tracing.tracer() is traces
        with traces.run_span("r-1", dry_run=False) as root:
            headers = traces.headers()  # what NatsDispatcher sends with the request
        assert set(headers) >= {"traceparent"}
        # In the worker: nothing current, then the request's headers.
        with traces.remote(headers):
            await execute_turn(ScriptedModel(), request, timeout_s=5)
    assert tracing.tracer() is None  # restored on leaving
    spans = {s.name: s for s in exporter.get_finished_spans()}
    chat = spans["chat claude-haiku-4-5"]
    assert chat.context.trace_id == root.get_span_context().trace_id == trace_id_of("r-1")
    assert chat.parent is not None
    assert chat.parent.span_id == root.get_span_context().span_id


@pytest.mark.parametrize(("environ", "service"), [
    ({}, "warden-worker"),
    ({"OTEL_SERVICE_NAME": "ledger-workers"}, "ledger-workers"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=eu-1,deployment.environment=prod"}, "eu-1"),
])
async def test_the_service_name_is_warden_s_unless_otel_names_one(
        monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], service: str) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    exporter = InMemorySpanExporter()
    async with tracing.open_tracing(ON, service="warden-worker", provider="p", environ={},
                                    exporter=exporter) as traces:
        assert traces is not None
        with traces.run_span("r-1", dry_run=False):
            pass
    [span] = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == service


async def test_the_start_is_logged_with_the_endpoint_but_never_its_credentials() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:s3cret@collector.internal:4318/otel"}
    with capture_logs() as logs:
        async with tracing.open_tracing(OFF, service="warden", provider="p", environ=environ,
                                        exporter=InMemorySpanExporter()):
            pass
    [started] = [e for e in logs if e["event"] == "tracing_started"]
    assert started["endpoint"] == "https://collector.internal:4318/otel"
    assert "s3cret" not in repr(logs)


def test_no_instrumentation_of_the_model_sdk_is_locked_so_no_call_is_traced_twice() -> None:
    # warden's chat spans are the only ones (README, "Tracing"): an instrumentation of
    # anthropic or httpx would report every call, and its tokens, a second time.
    root = Path(__file__).resolve().parents[2]
    locked = [line.split("==")[0] for lock in ("requirements.lock", "requirements-bench.lock")
              for line in (root / lock).read_text(encoding="utf-8").splitlines()
              if "==" in line and not line.startswith((" ", "#"))]
    assert "opentelemetry-sdk" in locked
    assert [name for name in locked if name.startswith("opentelemetry-instrumentation")] == []
