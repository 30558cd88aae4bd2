"""``warden show RUN --calls`` and the API's ``calls`` verb (issue 11, point 4, first
part), on a real nats-server and SQLite file: every model and tool call of a run, in the
order recorded, with tokens, cost and timing; paged to fit; the operator's to read."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from warden.bus import BusError
from warden.bus.wire import CallsQuery, CallView, ErrorReply, RunCalls, encoder, reply_decoder
from warden.supervisor import cli as cli_module
from warden.supervisor.api import page_calls
from warden.supervisor.cli import main

from tests.integration.harness import api, make_settings, run_task, running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(autouse=True)
def _tests_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``main`` would configure logging for a command line (see test_approvals.py).
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_, **__: None)


async def test_the_calls_verb_gives_every_call_of_a_run_in_order_with_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(tmp_path)
    async with running_daemon(settings, identity="operator") as (daemon, client):
        run = await run_task(client, "append three entries", scenario="ledger")
        assert run.status == "succeeded", run.error
        reply = reply_decoder.decode(await api(client, "calls", encoder.encode(
            CallsQuery(run_id=run.id))))
        recorded = await daemon.journal.calls(run.id)
        missing = reply_decoder.decode(await api(client, "calls", encoder.encode(
            CallsQuery(run_id="no-such-run"))))
        # The CLI through the daemon, as the operator.
        argv = ["show", run.id, "--calls", "--data-dir", str(tmp_path / "data")]
        assert await anyio.to_thread.run_sync(main, argv) == 0
    assert isinstance(reply, RunCalls) and reply.next is None
    assert reply.calls == recorded
    kinds = [(c.kind, c.purpose or c.name) for c in reply.calls]
    assert kinds[0] == ("model", "plan") and kinds[-1] == ("model", "synthesize")
    tools = [c for c in reply.calls if c.kind == "tool"]
    assert [c.name for c in tools] == ["ledger_append"] * 3 and all(c.ok for c in tools)
    # Each tool call comes after the model call that asked for it.
    first_tool = reply.calls.index(tools[0])
    assert reply.calls[first_tool - 1].kind == "model"
    assert "ledger_append" in reply.calls[first_tool - 1].response
    models = [c for c in reply.calls if c.kind == "model"]
    assert all(c.input_tokens > 0 and c.output_tokens > 0 and c.cost_usd > 0 for c in models)
    assert sum(c.input_tokens + c.output_tokens for c in models) == run.tokens
    assert isinstance(missing, ErrorReply) and missing.field == "run_id"
    out = capsys.readouterr().out
    assert out.count(" tool ledger_append ") == 3
    assert f"{len(recorded)} calls" in out
    assert "    sent:" in out and "    got:" in out


async def test_show_calls_reads_the_journal_when_no_daemon_runs_and_prints_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(tmp_path)
    async with running_daemon(settings) as (_, client):
        run = await run_task(client, "append three entries", scenario="ledger")
    argv = ["show", run.id, "--calls", "--json", "--data-dir", str(tmp_path / "data")]
    assert await anyio.to_thread.run_sync(main, argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[0])["id"] == run.id
    calls = [json.loads(line) for line in lines[1:]]
    assert [c["name"] for c in calls if c["kind"] == "tool"] == ["ledger_append"] * 3


async def test_a_client_may_not_read_the_calls(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_daemon(settings, identity="client") as (_, client):
        run = await run_task(client, "append three entries", scenario="ledger")
        with pytest.raises(BusError):
            await api(client, "calls", encoder.encode(CallsQuery(run_id=run.id)), timeout=2)


def test_a_page_holds_what_fits_and_a_call_too_large_alone_is_cut() -> None:
    small = [CallView(kind="tool", name="echo", request="{}", response="x" * 100)
             for _ in range(10)]
    big = CallView(kind="model", name="m", request="r" * 50_000, response="s" * 50_000)
    first = page_calls("r", small, 0, budget=1000)
    assert first.calls and first.next is not None and first.next < 10
    pages, after = [first], first.next
    while after is not None:
        pages.append(page_calls("r", small, after, budget=1000))
        after = pages[-1].next
    assert [c for p in pages for c in p.calls] == small
    assert all(len(encoder.encode(p)) <= 1000 for p in pages)
    (alone,) = page_calls("r", [big], 0, budget=8192).calls
    assert alone.cut and len(encoder.encode(alone)) < 8192
    assert page_calls("r", small, 10, budget=1000) == RunCalls(run_id="r", calls=[], next=None)
