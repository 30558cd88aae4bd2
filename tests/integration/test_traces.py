"""Traces through a real OTLP/HTTP receiver: a daemon without local workers and a
separate ``warden worker`` process, both exporting to it as ``OTEL_*`` says; each run is
one trace, the worker's spans joined to the daemon's (README, "Tracing")."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from warden.actors import genai_attributes as ga
from warden.actors.otel_tracing import trace_id_of

from tests.integration.harness import (
    make_settings,
    run_task,
    running_daemon,
    wait_for,
    worker_process,
)
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROLES = ["research", "code", "review"]
WORKER_SPANS_PER_RUN = 3 * 3  # per step: two chat turns and one ledger_append


def of_run(receiver: OtlpReceiver, run_id: str) -> list[ReceivedSpan]:
    trace_id = f"{trace_id_of(run_id):032x}"
    return [s for s in receiver.spans() if s.trace_id == trace_id]


async def test_each_run_is_one_trace_with_the_worker_process_spans_joined(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with otlp_receiver() as receiver:
        # Tracing on by the endpoint alone (no [tracing] setting), in both processes;
        # a short batch delay so the test waits on spans, not on the default 5 s.
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = make_settings(tmp_path, local_workers=False)
        async with running_daemon(settings) as (daemon, client):
            async with worker_process(daemon, ROLES, tmp_path / "worker", env=env) as worker:
                runs = [await run_task(client, "keep the ledger", scenario="ledger")
                        for _ in range(2)]

                async def received() -> bool:
                    return all(
                        sum(s.service == "warden-worker" for s in of_run(receiver, r.id))
                        == WORKER_SPANS_PER_RUN
                        and any(s.name == "invoke_workflow warden"
                                for s in of_run(receiver, r.id))
                        for r in runs)

                try:
                    await wait_for(received, timeout=20)
                except TimeoutError:
                    got = Counter((s.service, s.name) for s in receiver.spans())
                    raise AssertionError(f"spans received by the deadline: {got}") from None
    assert worker.returncode == 0
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    assert receiver.paths == {"/v1/traces"}
    ids = {r.id: f"{trace_id_of(r.id):032x}" for r in runs}
    assert len(set(ids.values())) == 2
    # Every span received belongs to one of the two runs' traces.
    assert {s.trace_id for s in receiver.spans()} == set(ids.values())
    for run in runs:
        spans = of_run(receiver, run.id)
        by_id = {s.span_id: s for s in spans}
        [root] = [s for s in spans if not s.parent_id]
        assert (root.name, root.service) == ("invoke_workflow warden", "warden")
        assert root.attributes[ga.WARDEN_RUN_STATUS] == "succeeded"
        assert root.attributes[ga.CONVERSATION_ID] == run.id
        # Each span's parent is a span of the same trace (nothing dangling).
        assert all(s.parent_id in by_id for s in spans if s.parent_id)
        worker_spans = [s for s in spans if s.service == "warden-worker"]
        assert Counter(s.name.split()[0] for s in worker_spans) == {"chat": 6,
                                                                      "execute_tool": 3}
        for span in worker_spans:
            parent = by_id[span.parent_id]
            # Made in the worker process, parented under the daemon's step span.
            assert parent.service == "warden"
            assert parent.name == f"invoke_agent {parent.attributes[ga.AGENT_NAME]}"
            assert by_id[parent.parent_id] == root
        chat = next(s for s in worker_spans if s.name.startswith("chat "))
        assert chat.attributes[ga.OPERATION_NAME] == "chat"
        assert chat.attributes[ga.PROVIDER_NAME] == "warden.scripted"
        assert chat.attributes[ga.REQUEST_MODEL] == chat.attributes[ga.RESPONSE_MODEL]
        assert isinstance(chat.attributes[ga.USAGE_INPUT_TOKENS], int)
        assert int(chat.attributes[ga.USAGE_OUTPUT_TOKENS]) > 0  # type: ignore[call-overload]
        assert chat.attributes[ga.CONVERSATION_ID] == run.id
        tool = next(s for s in worker_spans if s.name == "execute_tool ledger_append")
        assert tool.attributes[ga.TOOL_NAME] == "ledger_append"
        assert str(tool.attributes[ga.TOOL_CALL_ID]).startswith("toolu_")
        assert str(tool.attributes[ga.WARDEN_CALL_KEY]).startswith(f"{run.id}/e0/s")
        # The plan and synthesis calls are the daemon's own.
        daemon_chats = [s for s in spans if s.service == "warden" and s.name.startswith("chat")]
        assert sorted(str(s.attributes[ga.WARDEN_PURPOSE]) for s in daemon_chats) == [
            "plan", "synthesize"]
