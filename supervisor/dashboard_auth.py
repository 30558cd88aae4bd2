"""Who may use the dashboard: the operator, proven by the operator identity's nkey seed.

The rules (README, "The dashboard"):

- **Login** is the operator's nkey seed pasted into the login form. It is accepted only
  if its public key is the operator key the daemon checks decisions against
  (``ApprovalBoard.operator_key``); with none configured nobody can log in. The seed is
  kept in this process's memory for the session only, to sign the session's decisions
  (``decisions.decide``): never written, never logged, wiped at logout or expiry.
- **A session** is a random token (``secrets.token_urlsafe(32)``) in a cookie that is
  ``HttpOnly``, ``SameSite=Strict``, ``Path=/`` and expires with the session
  (``SESSION_S``, not renewed). At most ``MAX_SESSIONS`` live at once; a new login past
  that ends the oldest.
- **Every request** but ``/healthz``, ``/metrics``, the login page and the page's own
  static files needs a live session: a page answers ``303`` to ``/login``, an ``/api/``
  path ``401``.
- **Every POST** (login and logout included) must come from this server's own page: its
  ``Origin`` names this server's host and port (a cross-site form or fetch is refused: ``403``),
  and, for a session's actions, its ``X-Warden-CSRF`` header is the session's CSRF token
  (a second, independent check: the token is only readable by the page's own script).
- **Host.** While bound to loopback, a request whose ``Host`` is not a loopback name is
  refused (``421``): a DNS-rebinding page reaches nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from warden.bus.signing import seed_public_key, sign_with_seed
from warden.bus.wire import ApprovalDecision, SignedDecision

__all__ = ("COOKIE", "CSRF_HEADER", "MAX_SESSIONS", "SESSION_S", "Session", "Sessions",
           "host_allowed", "same_origin")

COOKIE = "warden_session"
CSRF_HEADER = "x-warden-csrf"
SESSION_S = 8 * 3600.0
"""How long a session lasts from its login."""
MAX_SESSIONS = 16
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(eq=False)
class Session:
    """One logged-in operator: the cookie's token, the CSRF token, the seed (memory only)."""

    token: str
    csrf: str
    expires_at: float
    """On the sessions' clock (monotonic)."""
    _seed: bytearray

    def __repr__(self) -> str:  # never the seed, never the tokens
        return f"Session(expires_at={self.expires_at:.0f})"

    def sign(self, decision: ApprovalDecision) -> SignedDecision:
        """``decision`` signed with this session's operator seed. Pure."""
        return sign_with_seed(decision, self._seed)

    def wipe(self) -> None:
        for index in range(len(self._seed)):
            self._seed[index] = 0
        self._seed.clear()


class Sessions:
    """The live sessions of one dashboard. Not thread-safe (one event loop)."""

    def __init__(self, operator_key: str | None, *, ttl_s: float = SESSION_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.operator_key = operator_key
        self.ttl_s = ttl_s
        self._clock = clock
        self._live: OrderedDict[str, Session] = OrderedDict()

    def login(self, pasted: str) -> Session | None:
        """A new session when ``pasted`` is the operator's nkey seed, else ``None``
        (malformed, another key, or no operator key known). Pure but for the store."""
        if self.operator_key is None:
            return None
        seed = bytearray(pasted.strip().encode("ascii", errors="replace"))
        try:
            key = seed_public_key(seed)
        except ValueError:
            key = None
        if key is None or not hmac.compare_digest(key, self.operator_key):
            seed[:] = b"\0" * len(seed)
            return None
        while len(self._live) >= MAX_SESSIONS:
            _, oldest = self._live.popitem(last=False)
            oldest.wipe()
        session = Session(token=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                          expires_at=self._clock() + self.ttl_s, _seed=seed)
        self._live[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of cookie value ``token``; an expired one is ended."""
        if not token:
            return None
        session = self._live.get(token)
        if session is None:
            return None
        if self._clock() >= session.expires_at:
            self.end(token)
            return None
        return session

    def end(self, token: str) -> None:
        """End (log out) the session of ``token``, wiping its seed; unknown: nothing."""
        session = self._live.pop(token, None)
        if session is not None:
            session.wipe()

    def end_all(self) -> None:
        for token in list(self._live):
            self.end(token)


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` names this server: its host and port are the
    ``Host`` the request was sent to. The scheme is not compared, so a proxy that
    terminates TLS in front of the dashboard still works. A request without ``Origin``
    (or ``Origin: null``) is refused: every browser sends one on a POST."""
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    if not origin or not host:
        return False
    parts = urllib.parse.urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == host and not parts.path


def host_allowed(request: Request, bound_host: str) -> bool:
    """Whether the request's ``Host`` may be served: any while bound to a non-loopback
    address (the operator chose to expose it), else only loopback names."""
    try:
        if not ipaddress.ip_address(bound_host).is_loopback:
            return True
    except ValueError:  # a name: loopback only if it is one of the loopback names
        if bound_host not in _LOOPBACK_NAMES:
            return True
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
    return name in _LOOPBACK_NAMES
