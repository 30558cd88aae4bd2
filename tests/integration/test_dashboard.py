"""The dashboard's HTTP endpoints on a real daemon (real nats-server, SQLite file, HTTP
server): a session is needed for everything but the login page, the static files,
``/healthz``; only the operator's seed logs in and the seed never reaches a log; POSTs from
another origin or without the session's CSRF token are refused; a DNS-rebinding Host is
refused; hostile run content comes back as JSON data under a strict CSP; a denial from the
dashboard goes through the daemon's checks; the live feed streams a run's events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2 as httpx
import pytest
from structlog.testing import capture_logs
from warden.bus.connection import Bus
from warden.bus.identities import seed_path
from warden.bus.wire import RunSummary
from warden.config import Settings
from warden.supervisor.daemon import CREDENTIALS_DIR, Daemon
from warden.supervisor.dashboard import STATIC
from warden.supervisor.dashboard_auth import COOKIE, CSRF_HEADER

from tests.integration.harness import make_settings, run_task, running_daemon
from tests.integration.test_approvals import (  # noqa: F401 - effects is a fixture
    bumps,
    effects,
    pending,
    settings_for,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

HOSTILE = ('<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
           '"quoted" & </pre>')


def operator_seed(daemon: Daemon) -> str:
    return seed_path(daemon.data_dir / CREDENTIALS_DIR, "operator").read_text().strip()


@asynccontextmanager
async def dashboard(settings: Settings) -> AsyncIterator[tuple[Daemon, Bus, httpx.AsyncClient]]:
    """A daemon, an operator bus connection, and an HTTP client on its dashboard."""
    async with running_daemon(settings, identity="operator") as (daemon, bus):
        assert daemon.http_url is not None
        async with httpx.AsyncClient(base_url=daemon.http_url, timeout=20) as http:
            yield daemon, bus, http


async def login(http: httpx.AsyncClient, seed: str) -> httpx.Response:
    return await http.post("/login", data={"seed": seed},
                           headers={"Origin": str(http.base_url).rstrip("/")})


async def logged_in(http: httpx.AsyncClient, daemon: Daemon) -> str:
    """Log in with the operator's seed; the session's CSRF token."""
    reply = await login(http, operator_seed(daemon))
    assert reply.status_code == 303 and reply.headers["location"] == "/"
    session = await http.get("/api/session")
    assert session.status_code == 200
    return str(session.json()["csrf"])


def post_headers(http: httpx.AsyncClient, csrf: str | None) -> dict[str, str]:
    headers = {"Origin": str(http.base_url).rstrip("/")}
    if csrf is not None:
        headers[CSRF_HEADER] = csrf
    return headers


async def test_everything_but_the_login_page_and_health_needs_a_session(
        tmp_path: Path) -> None:
    async with dashboard(make_settings(tmp_path)) as (_daemon, _bus, http):
        page = await http.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        for path in ("/api/session", "/api/runs", "/api/runs/x", "/api/approvals",
                     "/api/costs", "/api/breakers", "/api/events"):
            reply = await http.get(path)
            assert reply.status_code == 401, path
            assert "log in" in reply.json()["error"]
        decided = await http.post("/api/approvals/ap-1/approve", json={"reason": "x"},
                                  headers=post_headers(http, None))
        assert decided.status_code == 401
        assert (await http.get("/login")).status_code == 200
        assert (await http.get("/static/app.js")).status_code == 200
        assert (await http.get("/static/../dashboard.py")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200


async def test_only_the_operators_seed_logs_in_and_no_seed_reaches_the_logs(
        tmp_path: Path) -> None:
    async with dashboard(make_settings(tmp_path)) as (daemon, _bus, http):
        client_seed = seed_path(daemon.data_dir / CREDENTIALS_DIR, "client").read_text()
        with capture_logs() as logs:
            for wrong in (client_seed, "SUnot-a-seed", "", "x" * 5000):
                reply = await login(http, wrong)
                assert reply.status_code in (401, 413), wrong[:10]
                assert COOKIE not in reply.cookies
            refused = await login(http, client_seed)
            assert "not the operator" in refused.text
            assert (await http.get("/api/runs")).status_code == 401
            reply = await login(http, operator_seed(daemon))
        assert reply.status_code == 303
        cookie = reply.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
        assert (await http.get("/api/runs")).status_code == 200
        assert (await http.get("/")).status_code == 200
        seeds = (operator_seed(daemon), client_seed.strip())
        assert not any(seed in repr(event) for event in logs for seed in seeds)
        assert [e["event"] for e in logs if e["event"].startswith("dashboard_login")] == [
            "dashboard_login_refused"] * 4 + ["dashboard_login"]  # 413: not a login
        # Logged out: the cookie no longer opens anything.
        csrf = (await http.get("/api/session")).json()["csrf"]
        token = http.cookies[COOKIE]
        out = await http.post("/logout", headers=post_headers(http, csrf))
        assert out.status_code == 200
        http.cookies.set(COOKIE, token)
        assert (await http.get("/api/runs")).status_code == 401


async def test_a_post_from_another_origin_or_without_the_csrf_token_is_refused(
        tmp_path: Path) -> None:
    async with dashboard(make_settings(tmp_path)) as (daemon, _bus, http):
        cross = await http.post("/login", data={"seed": operator_seed(daemon)},
                                headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403 and COOKIE not in cross.cookies
        csrf = await logged_in(http, daemon)
        path = "/api/approvals/ap-none/approve"
        evil = await http.post(path, json={}, headers={"Origin": "http://evil.example",
                                                       CSRF_HEADER: csrf})
        assert evil.status_code == 403 and evil.json()["field"] == "Origin"
        no_origin = await http.post(path, json={}, headers={CSRF_HEADER: csrf})
        assert no_origin.status_code == 403
        no_token = await http.post(path, json={}, headers=post_headers(http, None))
        assert no_token.status_code == 403 and no_token.json()["field"] == CSRF_HEADER
        wrong = await http.post(path, json={}, headers=post_headers(http, csrf[:-2] + "xx"))
        assert wrong.status_code == 403
        # Past both checks: refused only because no such request waits.
        right = await http.post(path, json={}, headers=post_headers(http, csrf))
        assert right.status_code == 409 and "ap-none" in right.json()["error"]


async def test_a_dns_rebinding_host_is_refused_while_bound_to_loopback(tmp_path: Path) -> None:
    async with dashboard(make_settings(tmp_path)) as (_daemon, _bus, http):
        reply = await http.get("/login", headers={"Host": "attacker.example"})
        assert reply.status_code == 421
        assert (await http.get("/login", headers={"Host": "localhost"})).status_code == 200


async def test_hostile_run_content_is_served_as_json_data_under_a_strict_csp(
        tmp_path: Path) -> None:
    async with dashboard(make_settings(tmp_path)) as (daemon, bus, http):
        run = await run_task(bus, HOSTILE, scenario="ledger")
        await logged_in(http, daemon)
        detail = await http.get(f"/api/runs/{run.id}")
        listing = await http.get("/api/runs", params={"q": "onerror"})
        page = await http.get("/")
    assert detail.status_code == 200
    for reply in (detail, listing):
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["x-content-type-options"] == "nosniff"
    assert detail.json()["run"]["text"] == HOSTILE
    assert [r["id"] for r in listing.json()["runs"]] == [run.id]
    assert detail.json()["calls"], "the run's model and tool calls"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert b"<script>" not in page.content.replace(b'<script src="/static/app.js" defer>', b"")


def test_the_page_script_never_renders_data_as_markup() -> None:
    # The one rule of app.js: data goes on the page as text. A sink for markup is a bug.
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in script, sink


async def test_costs_breakers_and_the_live_feed_follow_a_run(tmp_path: Path) -> None:
    async with dashboard(make_settings(tmp_path)) as (daemon, bus, http):
        await logged_in(http, daemon)
        seen: list[dict[str, object]] = []
        ran: list[RunSummary] = []
        async with http.stream("GET", "/api/events") as events, anyio.create_task_group() as tg:
            assert events.headers["content-type"].startswith("text/event-stream")

            async def go() -> None:
                ran.append(await run_task(bus, "append three lines", scenario="ledger"))

            tg.start_soon(go)
            with anyio.fail_after(30):
                async for line in events.aiter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        if seen[-1]["kind"] == "status" and seen[-1]["status"] == "succeeded":
                            break
        costs = (await http.get("/api/costs")).json()["rows"]
        breakers = (await http.get("/api/breakers")).json()["breakers"]
        bad = await http.get("/api/runs", params={"status": "sleeping"})
    (run,) = ran
    assert {e["run_id"] for e in seen} == {run.id}
    kinds = [e["kind"] for e in seen]
    assert "step_started" in kinds and "turn" in kinds and "model_call" not in kinds
    assert seen[-1]["cost_usd"] == pytest.approx(run.cost_usd, abs=1e-6)
    assert sum(r["cost_usd"] for r in costs) == pytest.approx(run.cost_usd, abs=1e-5)
    assert sum(r["calls"] for r in costs) >= 1
    assert {b["name"] for b in breakers} >= {f"worker.{role}" for role in
                                             daemon.settings.roles}
    assert all(b["state"] == "closed" for b in breakers)
    assert bad.status_code == 400 and bad.json()["field"] == "status"
    assert daemon.feed.watchers == 0  # the stream's end closed its queue


@pytest.mark.usefixtures("effects")
async def test_a_denial_from_the_dashboard_goes_through_the_daemons_checks(
        tmp_path: Path) -> None:
    async with dashboard(settings_for(tmp_path)) as (daemon, bus, http):
        csrf = await logged_in(http, daemon)
        ended: list[RunSummary] = []
        async with anyio.create_task_group() as tg:

            async def go() -> None:
                ended.append(await run_task(bus, "bump once", scenario="bump"))

            tg.start_soon(go)
            (request,) = await pending(daemon)
            listed = (await http.get("/api/approvals")).json()["approvals"]
            assert [(a["id"], a["tool"], a["hash"]) for a in listed] == [
                (request.id, "bump", request.hash)]
            path = f"/api/approvals/{request.id}/deny"
            no_reason = await http.post(path, json={}, headers=post_headers(http, csrf))
            assert no_reason.status_code == 400 and no_reason.json()["field"] == "reason"
            denied = await http.post(path, json={"reason": "not today"},
                                     headers=post_headers(http, csrf))
            assert denied.status_code == 200, denied.text
            assert denied.json()["applied"] is True and denied.json()["status"] == "denied"
            again = await http.post(f"/api/approvals/{request.id}/approve", json={},
                                    headers=post_headers(http, csrf))
            assert again.status_code == 409  # no longer pending
        decided = await daemon.journal.approval(request.id)
    assert bumps(tmp_path / "bumps.txt") == []
    assert decided is not None and decided.status == "denied" and decided.reason == "not today"
    # Signed with the session's seed: the operator's key is the decider.
    assert decided.decided_by == daemon.approvals.operator_key
    assert "not today" in ended[0].steps[0].output
