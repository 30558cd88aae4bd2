"""The API's bounds: runs are paged, replies fit the server's max payload, a bug in a
verb is answered and logged, never raised (a real journal file, a fake bus)."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import pytest
from warden.bus.connection import Envelope
from warden.bus.wire import (
    DaemonHealth,
    ErrorReply,
    RunList,
    RunsQuery,
    RunSummary,
    StepSummary,
    encoder,
    reply_decoder,
)
from warden.config import load_settings
from warden.supervisor.api import Api, fit_run
from warden.supervisor.events import EventStream
from warden.supervisor.journal import Journal

pytestmark = pytest.mark.anyio


@dataclass
class FakeBus:
    max_payload: int = 1024 * 1024
    replies: list[bytes] = field(default_factory=list)

    async def respond(self, envelope: Envelope, data: bytes) -> None:
        self.replies.append(data)


class Control:
    async def cancel_run(self, run_id: str) -> str:
        raise RuntimeError("a bug in cancel")

    async def resume_run(self, run_id: str) -> str:
        return "queued"

    def health(self) -> DaemonHealth:
        return DaemonHealth(daemon_id="d1", version="0.1.0", data_dir="/x", pid=1,
                            active_runs=0, open_breakers=[], intake="consuming")


def make_api(journal: Journal, bus: FakeBus) -> Api:
    return Api(bus, journal, load_settings(env={}), Control(),  # type: ignore[arg-type]
               EventStream(journal, []), daemon_id="d1", version="0.1.0", metadata={})


async def page(api: Api, **query: object) -> RunList:
    reply = await api.answer("runs", encoder.encode(RunsQuery(**query)))  # type: ignore[arg-type]
    assert isinstance(reply, RunList), reply
    return reply


async def all_pages(api: Api, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        listing = await page(api, limit=limit, before=cursor)
        pages.append([run.id for run in listing.runs])
        cursor = listing.next_before
        if cursor is None:
            return pages


async def test_runs_come_in_pages_newest_first_each_page_newest_last(journal: Journal) -> None:
    for i in range(25):
        await journal.create_run(f"r-{i:02d}", text=f"task {i}", status="queued")
    api = make_api(journal, FakeBus())
    pages = await all_pages(api, limit=10)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert pages[0] == [f"r-{i:02d}" for i in range(15, 25)]
    assert pages[2] == [f"r-{i:02d}" for i in range(5)]


async def test_a_page_of_big_tasks_stays_under_max_payload_and_paging_sees_every_run(
    journal: Journal,
) -> None:
    for i in range(22):
        await journal.create_run(f"big-{i:02d}", text="x" * 60_000, status="queued")
    bus = FakeBus(max_payload=16 * 1024)
    api = make_api(journal, bus)
    first = await page(api, limit=1000)
    assert len(encoder.encode(first)) < bus.max_payload
    assert all(run.truncated and len(run.text) < 300 for run in first.runs)
    seen = [run_id for p in await all_pages(api, limit=1000) for run_id in p]
    assert sorted(seen) == [f"big-{i:02d}" for i in range(22)]
    assert len(set(seen)) == 22


async def test_a_status_filter_and_bad_queries(journal: Journal) -> None:
    await journal.create_run("ok", text="t", status="queued")
    await journal.create_run("bad", text="t", status="rejected", error="e")
    api = make_api(journal, FakeBus())
    assert [r.id for r in (await page(api, status="rejected")).runs] == ["bad"]
    wrong = await api.answer("runs", b'{"status": "sleeping"}')
    assert isinstance(wrong, ErrorReply) and wrong.field == "status"
    cursor = await api.answer("runs", b'{"before": "yesterday"}')
    assert isinstance(cursor, ErrorReply) and cursor.field == "before"
    unknown = await api.answer("runs", b'{"limt": 5}')
    assert isinstance(unknown, ErrorReply) and unknown.field == "limt"


def test_fit_run_cuts_a_big_run_to_the_budget_and_says_so() -> None:
    steps = [StepSummary(index=i, role="code", instruction="do " * 500, status="succeeded",
                         output="o" * 200_000) for i in range(40)]
    run = RunSummary(id="r", status="succeeded", text="t" * 60_000, created_at=0.0,
                     updated_at=0.0, result="r" * 500_000, steps=steps)
    for budget in (1_000_000, 64_000, 8_000):
        fitted = fit_run(run, budget)
        assert len(encoder.encode(fitted)) <= budget
        assert fitted.truncated
        assert fitted.id == "r" and fitted.status == "succeeded"
    small = RunSummary(id="s", status="queued", text="t", created_at=0.0, updated_at=0.0)
    assert fit_run(small, 1000) is small


async def test_an_exception_in_a_verb_is_answered_and_logged_not_raised(
    journal: Journal, logs: list[dict[str, object]],
) -> None:
    await journal.create_run("r-1", text="t", status="queued")
    bus = FakeBus()
    api = make_api(journal, bus)
    envelope = Envelope(subject="warden.api.d1.cancel", data=b'{"run_id": "r-1"}',
                        headers={}, reply="_INBOX.x")
    limiter = anyio.Semaphore(1)
    await limiter.acquire()
    await api._serve(envelope, limiter)
    reply = reply_decoder.decode(bus.replies[0])
    assert isinstance(reply, ErrorReply)
    assert "internal error answering 'cancel': RuntimeError" in reply.error
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["api_handler_failed"]
    assert limiter.value == 1 and api.failed == 1


async def test_ping_answers_health_and_refuses_unknown_fields(journal: Journal) -> None:
    api = make_api(journal, FakeBus())
    assert isinstance(await api.answer("ping", b""), DaemonHealth)
    assert isinstance(await api.answer("ping", b"{}"), DaemonHealth)
    bad = await api.answer("ping", b"{\"deep\": " + b"[" * 1000 + b"]" * 1000 + b"}")
    assert isinstance(bad, ErrorReply) and "nests deeper" in bad.error


async def test_resubmitting_a_known_id_returns_the_stored_run_not_the_new_text(
    journal: Journal,
) -> None:
    await journal.create_run("mine", text="the first text", status="queued")
    api = make_api(journal, FakeBus())
    reply = await api.answer("submit", b'{"id": "mine", "text": "a second text"}')
    assert isinstance(reply, RunSummary)
    assert reply.already_submitted
    assert (reply.id, reply.text, reply.status) == ("mine", "the first text", "queued")


async def test_submit_refuses_unknown_fields_and_depth_bombs_by_name(journal: Journal) -> None:
    api = make_api(journal, FakeBus())
    typo = await api.answer("submit", b'{"text": "x", "budget": 1}')
    assert isinstance(typo, ErrorReply) and typo.field == "budget"
    bomb = await api.answer("submit", b'{"text": "x", "a": ' + b"[" * 10_000 + b"]" * 10_000
                            + b"}")
    assert isinstance(bomb, ErrorReply) and "nests deeper than 32 levels" in bomb.error
