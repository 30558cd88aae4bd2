"""The dashboard's sessions and request checks (``supervisor/dashboard_auth.py``): only the
operator's seed opens a session; sessions expire, are bounded, and wipe their seed; a
session signs decisions the daemon's check accepts; the Origin and Host rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import Request
from warden.bus.identities import ensure_seeds, public_key
from warden.bus.signing import open_signed, seed_public_key
from warden.bus.wire import ApprovalDecision
from warden.supervisor.dashboard_auth import (
    MAX_SESSIONS,
    Sessions,
    host_allowed,
    same_origin,
)


@pytest.fixture
def seeds(tmp_path: Path) -> dict[str, str]:
    return {str(i): p.read_text().strip() for i, p in ensure_seeds(tmp_path / "c").items()}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_only_the_operators_seed_opens_a_session(seeds: dict[str, str]) -> None:
    sessions = Sessions(seed_public_key(seeds["operator"].encode()))
    for wrong in (seeds["client"], seeds["daemon"], "", "SUAAAA", "not a seed",
                  seeds["operator"][:-1], "é" * 10):
        assert sessions.login(wrong) is None, wrong[:6]
    session = sessions.login("  " + seeds["operator"] + "\n")  # pasted with blanks
    assert session is not None and sessions.get(session.token) is session
    assert seeds["operator"] not in repr(session) and session.token not in repr(session)


def test_without_an_operator_key_nobody_logs_in(seeds: dict[str, str]) -> None:
    assert Sessions(None).login(seeds["operator"]) is None


def test_a_session_expires_and_ending_it_wipes_its_seed(seeds: dict[str, str]) -> None:
    clock = Clock()
    sessions = Sessions(seed_public_key(seeds["operator"].encode()), ttl_s=60, clock=clock)
    session = sessions.login(seeds["operator"])
    assert session is not None
    clock.now += 59.9
    assert sessions.get(session.token) is session
    clock.now += 0.1
    assert sessions.get(session.token) is None
    assert session._seed == bytearray()  # wiped
    assert sessions.get("") is None and sessions.get(None) is None


def test_sessions_are_bounded_and_the_oldest_ends_first(seeds: dict[str, str]) -> None:
    sessions = Sessions(seed_public_key(seeds["operator"].encode()))
    opened = [sessions.login(seeds["operator"]) for _ in range(MAX_SESSIONS + 1)]
    assert all(s is not None for s in opened)
    tokens = [s.token for s in opened if s is not None]
    assert len(set(tokens)) == len(tokens)
    assert sessions.get(tokens[0]) is None
    assert all(sessions.get(t) is not None for t in tokens[1:])


def test_a_sessions_decision_is_signed_by_the_operators_key(
        seeds: dict[str, str], tmp_path: Path) -> None:
    operator = public_key(tmp_path / "c" / "operator.nk")
    session = Sessions(operator).login(seeds["operator"])
    assert session is not None
    decision = ApprovalDecision(id="ap-1", run_id="r-1", hash="h" * 64, verdict="approve",
                                reason="ok", issued_at=1.0, nonce="n1")
    opened = open_signed(session.sign(decision))
    assert opened is not None and opened.signer == operator and opened.decision == decision


def request(headers: dict[str, str], scheme: str = "http") -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "scheme": scheme,
                    "query_string": b"", "server": ("127.0.0.1", 8080),
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


@pytest.mark.parametrize(("origin", "allowed"), [
    ("http://127.0.0.1:8080", True),
    ("http://127.0.0.1:8081", False),
    ("https://127.0.0.1:8080", True),  # a proxy terminating TLS in front of it
    ("http://127.0.0.1:8080/x", False),
    ("file://127.0.0.1:8080", False),
    ("http://evil.example", False),
    ("null", False),
    (None, False),
])
def test_only_this_servers_own_origin_may_post(origin: str | None, allowed: bool) -> None:
    headers = {"Host": "127.0.0.1:8080"} | ({"Origin": origin} if origin else {})
    assert same_origin(request(headers)) is allowed


@pytest.mark.parametrize(("bound", "host", "allowed"), [
    ("127.0.0.1", "127.0.0.1:8080", True),
    ("127.0.0.1", "localhost:8080", True),
    ("127.0.0.1", "[::1]:8080", True),
    ("127.0.0.1", "attacker.example:8080", False),
    ("127.0.0.1", "", False),
    ("localhost", "rebound.example", False),
    ("::1", "[::1]:8080", True),
    ("0.0.0.0", "warden.internal:8080", True),  # exposed on purpose: any name
    ("10.0.0.5", "warden.internal", True),
])
def test_a_loopback_dashboard_answers_loopback_host_names_only(
        bound: str, host: str, allowed: bool) -> None:
    assert host_allowed(request({"Host": host} if host else {}), bound) is allowed
