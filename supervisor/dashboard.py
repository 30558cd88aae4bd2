"""The dashboard: a page served by the daemon's HTTP server (``web.py``), no build step.

Routes (every one but the login page and the page's static files needs the operator's
session; the rules are ``dashboard_auth.py``'s):

    GET  /                          the page (``dashboard/index.html``, ``app.js``, ``style.css``)
    GET  /login, POST /login        the login form: the operator's nkey seed
    POST /logout
    GET  /api/session               the operator key and the session's CSRF token
    GET  /api/runs?status=&q=&limit=    runs, newest first, filtered by status and id/text
    GET  /api/runs/<id>             one run: steps, plan, every call, approvals, anomalies
    GET  /api/approvals             the pending approval requests
    POST /api/approvals/<id>/approve|deny   {"reason": "..."}: signed with the session's
                                    seed and published as ``warden approve`` does
    GET  /api/costs?days=           spend per UTC day and model
    GET  /api/breakers              the breakers' states
    GET  /api/events                live run events (server-sent events, ``dashboard_feed``)

Everything shown comes from JSON and is put on the page as text (``textContent``), never
as markup: prompts, tool output and task text are untrusted. Responses carry a strict
Content-Security-Policy (scripts and styles from this server only) as a second line.
"""

from __future__ import annotations

import functools
import hmac
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from warden.bus.errors import BusError
from warden.bus.wire import CallView, encoder
from warden.supervisor.approvals import info_of
from warden.supervisor.dashboard_auth import (
    COOKIE,
    CSRF_HEADER,
    Session,
    Sessions,
    host_allowed,
    same_origin,
)
from warden.supervisor.dashboard_feed import LiveFeed
from warden.supervisor.decisions import decide
from warden.supervisor.journal_views import cost_per_day_and_model
from warden.supervisor.run_states import STATUSES

if TYPE_CHECKING:
    from warden.supervisor.daemon import Daemon

__all__ = ("Dashboard", "dashboard_routes")

log = structlog.get_logger("warden.dashboard")

STATIC = Path(__file__).with_name("dashboard")
_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
            "X-Frame-Options": "DENY"}
_MAX_FORM_BYTES = 4096
_CALL_TEXT_CHARS = 20_000
_RUN_APPROVALS = 100_000
"""Every approval request of one run (its calls bound them long before this)."""
"""A call's prompt or response beyond this is cut on the page (``cut``); the CLI's
``warden show RUN --calls`` prints it whole."""
_DECISION_WAIT_S = 10.0
_LOGIN_REFUSED = "That is not the operator's nkey seed."
_NO_OPERATOR = ("This daemon knows no operator key (set approvals.operator_key on an "
                "external NATS server): nobody can log in.")

Handler = Callable[[Request], Awaitable[Response]]
SessionHandler = Callable[[Request, Session], Awaitable[Response]]


def _json(value: object, status: int = 200) -> Response:
    return Response(encoder.encode(value), status_code=status, media_type="application/json",
                    headers=_HEADERS)


def _problem(status: int, error: str, field: str | None = None) -> Response:
    return _json({"error": error, "field": field}, status)


class Dashboard:
    """The dashboard of one daemon: its sessions, its live feed, its routes."""

    def __init__(self, daemon: Daemon, feed: LiveFeed) -> None:
        self.daemon = daemon
        self.feed = feed
        self.sessions = Sessions(daemon.approvals.operator_key)
        self._bound_host = daemon.settings.http.host
        self._static = {name: (STATIC / name).read_bytes() for name in
                        (*_FILES, "index.html", "login.html")}

    def routes(self) -> list[BaseRoute]:
        page, api = self._page, self._api
        return [
            Route("/", page(self._index), methods=["GET"]),
            Route("/login", self._guarded(self._login_form), methods=["GET"]),
            Route("/login", self._guarded(self._login), methods=["POST"]),
            Route("/logout", api(self._logout, post=True), methods=["POST"]),
            Route("/static/{name}", self._guarded(self._file), methods=["GET"]),
            Route("/api/session", api(self._session), methods=["GET"]),
            Route("/api/runs", api(self._runs), methods=["GET"]),
            Route("/api/runs/{run_id}", api(self._run), methods=["GET"]),
            Route("/api/approvals", api(self._approvals), methods=["GET"]),
            Route("/api/approvals/{approval_id}/{verdict}", api(self._decide, post=True),
                  methods=["POST"]),
            Route("/api/costs", api(self._costs), methods=["GET"]),
            Route("/api/breakers", api(self._breakers), methods=["GET"]),
            Route("/api/events", api(self._events), methods=["GET"]),
        ]

    # -- the guards ---------------------------------------------------------------------

    def _guarded(self, handler: Handler) -> Handler:
        """The host check and the security headers, for every route."""

        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            if not host_allowed(request, self._bound_host):
                return Response("misdirected request: not a loopback host name",
                                status_code=421, headers=_HEADERS)
            response = await handler(request)
            for name, value in _HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return guarded

    def _session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def _page(self, handler: SessionHandler) -> Handler:
        async def page(request: Request) -> Response:
            session = self._session_of(request)
            if session is None:
                return RedirectResponse("/login", status_code=303)
            return await handler(request, session)

        return self._guarded(page)

    def _api(self, handler: SessionHandler, *, post: bool = False) -> Handler:
        async def api(request: Request) -> Response:
            if post and not same_origin(request):
                return _problem(403, "cross-origin request refused (Origin is not this "
                                     "dashboard's)", "Origin")
            session = self._session_of(request)
            if session is None:
                return _problem(401, "log in first: POST /login with the operator's seed")
            if post and not _tokens_equal(request.headers.get(CSRF_HEADER), session.csrf):
                return _problem(403, f"missing or wrong {CSRF_HEADER} header", CSRF_HEADER)
            return await handler(request, session)

        return self._guarded(api)

    # -- pages and login ----------------------------------------------------------------

    async def _index(self, _request: Request, _session: Session) -> Response:
        return Response(self._static["index.html"], media_type="text/html")

    async def _file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _FILES:
            return Response("not found", status_code=404)
        return Response(self._static[name], media_type=_FILES[name])

    def _login_page(self, message: str = "", status: int = 200) -> Response:
        # The message is one of this module's constants, never request data.
        html = self._static["login.html"].replace(b"{{message}}", message.encode())
        return Response(html, status_code=status, media_type="text/html")

    async def _login_form(self, request: Request) -> Response:
        if self._session_of(request) is not None:
            return RedirectResponse("/", status_code=303)
        return self._login_page()

    async def _login(self, request: Request) -> Response:
        if not same_origin(request):
            return Response("cross-origin login refused", status_code=403)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM_BYTES:
                return Response("login form too large", status_code=413)
        fields = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"))
        pasted = (fields.get("seed") or [""])[0]
        session = self.sessions.login(pasted)
        del pasted, fields, body
        client = request.client.host if request.client else "?"
        if session is None:
            log.warning("dashboard_login_refused", client=client)
            known = self.sessions.operator_key is not None
            return self._login_page(_LOGIN_REFUSED if known else _NO_OPERATOR, status=401)
        log.info("dashboard_login", client=client)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session.token, max_age=int(self.sessions.ttl_s),
                            path="/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def _logout(self, _request: Request, session: Session) -> Response:
        self.sessions.end(session.token)
        response = _json({"logged_out": True})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -- the JSON API -------------------------------------------------------------------

    async def _session(self, _request: Request, session: Session) -> Response:
        return _json({"operator": self.sessions.operator_key, "csrf": session.csrf,
                      "daemon_id": self.daemon.daemon_id,
                      "expires_in_s": round(session.expires_at - time.monotonic())})

    async def _runs(self, request: Request, _session: Session) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in STATUSES:
            return _problem(400, f"status {status!r} is not one of {list(STATUSES)}",
                            "status")
        try:
            limit = min(500, max(1, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return _problem(400, "limit is not a whole number", "limit")
        text = request.query_params.get("q", "")[:200]
        runs = [run for _, run in await self.daemon.journal.page_runs(
            limit=limit, status=status, text=text)]
        return _json({"runs": runs})

    async def _run(self, request: Request, _session: Session) -> Response:
        run_id = request.path_params["run_id"]
        journal = self.daemon.journal
        run = await journal.get_run(run_id)
        if run is None:
            return _problem(404, f"no run {run_id!r}", "run_id")
        calls = [_cut_call(call) for call in await journal.calls(run_id)]
        approvals = [record._asdict() for record in await journal.approvals(
            status=None, run_id=run_id, limit=_RUN_APPROVALS)]
        state = await journal.run_state(run_id)
        return _json({"run": run, "plan": None if state is None else state.plan,
                      "calls": calls, "approvals": approvals, "anomalies": run.anomalies})

    async def _approvals(self, _request: Request, _session: Session) -> Response:
        records = await self.daemon.journal.approvals(status="pending", live_only=True)
        return _json({"approvals": [info_of(record) for record in records],
                      "now": time.time()})

    async def _decide(self, request: Request, session: Session) -> Response:
        verdict = request.path_params["verdict"]
        if verdict not in ("approve", "deny"):
            return _problem(404, f"no action {verdict!r}: approve or deny", "verdict")
        try:
            body = msgspec.json.decode(await request.body(), type=_DecisionForm)
        except msgspec.DecodeError as exc:
            return _problem(400, f"the body is not {{\"reason\": text}}: {exc}", "reason")
        if verdict == "deny" and not body.reason.strip():
            return _problem(400, "a denial needs a reason: the model and the audit read it",
                            "reason")
        approval_id = request.path_params["approval_id"]
        record = await self.daemon.journal.approval(approval_id)
        if record is None or record.status != "pending":
            return _problem(409, f"no pending approval request {approval_id!r} (decided, "
                                 "expired or unknown)", "approval_id")
        try:
            decided = await decide(
                self.daemon.bus, info_of(record), "approve" if verdict == "approve" else
                "deny", body.reason, session.sign,
                publish_timeout=self.daemon.settings.nats.request_timeout_s,
                outcome_timeout=_DECISION_WAIT_S)
        except BusError as exc:
            return _problem(502, f"the decision could not be published: {exc}")
        outcome = decided.outcome
        if outcome is None:
            return _problem(504, f"decision stored (seq {decided.seq}) but not judged "
                                 f"within {_DECISION_WAIT_S:g} s")
        log.info("dashboard_decision", approval=approval_id, verdict=verdict,
                 applied=outcome.applied)
        return _json(outcome, 200 if outcome.applied else 409)

    async def _costs(self, request: Request, _session: Session) -> Response:
        try:
            days = min(366, max(1, int(request.query_params.get("days", "14"))))
        except ValueError:
            return _problem(400, "days is not a whole number", "days")
        return _json({"days": days,
                      "rows": await cost_per_day_and_model(self.daemon.journal, days=days)})

    async def _breakers(self, _request: Request, _session: Session) -> Response:
        context = self.daemon.context
        found = [*context.breakers.values(), *context.model_breakers.values()]
        return _json({"breakers": [
            {"name": s.name, "state": s.state, "consecutive_failures": s.consecutive_failures,
             "times_opened": s.times_opened, "calls_rejected": s.calls_rejected}
            for s in (breaker.statistics() for breaker in found)]})

    async def _events(self, _request: Request, session: Session) -> Response:
        watcher = self.feed.watch()
        if watcher is None:
            return _problem(503, "too many live views open; close one")

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for line in watcher.lines():
                    if self.sessions.get(session.token) is None:
                        break  # logged out or expired: the stream ends with the session
                    yield line
            finally:
                watcher.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})


class _DecisionForm(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


def _tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the session's."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _cut_call(call: CallView) -> CallView:
    if len(call.request) <= _CALL_TEXT_CHARS and len(call.response) <= _CALL_TEXT_CHARS:
        return call
    return msgspec.structs.replace(call, request=call.request[:_CALL_TEXT_CHARS],
                                   response=call.response[:_CALL_TEXT_CHARS], cut=True)


def dashboard_routes(daemon: Daemon) -> list[BaseRoute]:
    """The dashboard's routes for ``daemon``'s HTTP server; its live feed is
    ``daemon.feed`` (an observer on the daemon's event stream)."""
    return Dashboard(daemon, daemon.feed).routes()
