"""Bad input is recorded as a rejected run naming the field, and never stops the daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from warden.bus import subjects
from warden.bus.wire import ErrorReply, RunList, RunsQuery, RunSummary, encoder, reply_decoder
from warden.supervisor.run import TERMINAL

from tests.integration.harness import api, make_settings, run_task, running_daemon, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BAD = [
    pytest.param(b"this is not json", None, "malformed", id="not-json"),
    pytest.param(b'{"scenario": "fizzbuzz"}', "text", "missing required field", id="missing"),
    pytest.param(b'{"text": 5}', "text", "Expected `str`, got `int`", id="wrong-type"),
    pytest.param(b'{"text": "x", "budget_usd": "lots"}', "budget_usd", "got `str`",
                 id="wrong-type-nested"),
    pytest.param(b'{"text": "   "}', "text", "must not be empty", id="empty-text"),
    pytest.param(b'{"text": "x", "budget_usd": -1}', "budget_usd", "greater than 0",
                 id="negative-budget"),
    pytest.param(b'{"text": "x", "id": "a.b"}', "id", "[A-Za-z0-9_-]", id="bad-id"),
    pytest.param(b'{"text": "' + b"x" * 2000 + b'"}', None, "larger than limits.max_task_bytes",
                 id="too-large"),
    pytest.param(b"[1, 2, 3]", None, "Expected `object`, got `array`", id="not-an-object"),
]


@pytest.mark.parametrize(("payload", "field", "problem"), BAD)
async def test_bad_submission_on_the_task_subject_is_recorded_as_rejected(
    tmp_path: Path, payload: bytes, field: str | None, problem: str
) -> None:
    settings = make_settings(tmp_path, limits__max_task_bytes=1024)
    async with running_daemon(settings) as (_daemon, client):
        # Published like `nats pub warden.tasks ...` would: core NATS, a Nats-Msg-Id header.
        await client.publish(subjects.TASKS, payload, headers={"Nats-Msg-Id": "bad-1"})

        async def rejected() -> RunSummary | None:
            raw = await api(client, "show", b'{"run_id": "bad-1"}', timeout=5)
            reply = reply_decoder.decode(raw)
            return reply if isinstance(reply, RunSummary) else None

        run = await wait_for(rejected)
        # The daemon still serves: a good task after the bad one runs to the end.
        good = await run_task(client, "fizzbuzz")
    assert run.status == "rejected"
    assert problem in (run.error or "")
    if field is not None:
        assert f"field {field!r}" in (run.error or "")
    assert good.status == "succeeded"


async def test_garbage_without_a_message_id_gets_a_run_id_from_the_stream(tmp_path: Path) -> None:
    async with running_daemon(make_settings(tmp_path)) as (_daemon, client):
        await client.publish(subjects.TASKS, b"\x00\xffgarbage")

        async def listed() -> list[RunSummary]:
            raw = await api(client, "runs", encoder.encode(RunsQuery(status="rejected")),
                            timeout=5)
            reply = reply_decoder.decode(raw)
            assert isinstance(reply, RunList)
            return reply.runs

        runs = await wait_for(listed)
    assert len(runs) == 1
    assert runs[0].id.startswith("t-")
    assert "malformed" in (runs[0].error or "")


async def test_bad_submission_as_a_request_gets_an_error_reply_naming_the_field(
    tmp_path: Path,
) -> None:
    async with running_daemon(make_settings(tmp_path)) as (_daemon, client):
        raw = await api(client, "submit", b'{"text": ["a"]}', timeout=5)
        reply = reply_decoder.decode(raw)
        good_raw = await api(client, "submit", b'{"id": "via-api", "text": "fizzbuzz"}',
                             timeout=5)
        good = reply_decoder.decode(good_raw)

        async def finished() -> RunSummary | None:
            raw = await api(client, "show", b'{"run_id": "via-api"}', timeout=5)
            run = reply_decoder.decode(raw)  # an ErrorReply until intake has the run
            return run if isinstance(run, RunSummary) and run.status in TERMINAL else None

        run = await wait_for(finished, timeout=60)
        listing = reply_decoder.decode(await api(
            client, "runs", encoder.encode(RunsQuery(status="rejected")), timeout=5))
    assert isinstance(reply, ErrorReply)
    assert reply.field == "text"
    assert "Expected `str`, got `array`" in reply.error
    assert isinstance(good, RunSummary) and good.id == "via-api"
    assert run.status == "succeeded"
    assert isinstance(listing, RunList) and len(listing.runs) == 1
