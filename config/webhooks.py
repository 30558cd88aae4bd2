"""The settings of one approval webhook, and the checks the types cannot make.

The shape (README, "Approval webhooks"); the lead's ``Settings`` holds them as
``approvals.webhooks``::

    [[approvals.webhooks]]
    url = "https://hooks.example.com/warden"   # or url_env: the URL is itself a credential
    secret_env = "SHOP_WEBHOOK_SECRET"         # optional: HMAC-SHA256 signing, the secret in
                                               # the environment, never in the config
    timeout_s = 10                             # one attempt, connect to last byte of the answer
    attempts = 5                               # requests per notice, the first included
    retry_base_s = 1                           # full-jitter exponential backoff between them
    retry_max_s = 30
    retry_after_cap_s = 60                     # a 429's retry-after is honoured up to this

    [[approvals.webhooks]]                     # a Slack incoming webhook: its URL is the secret
    url_env = "SLACK_APPROVALS_URL"

Exactly one of ``url`` and ``url_env``. A URL is ``http`` or ``https`` with a host and no
user or password in it (credentials go in ``secret_env``). ``url_env`` and ``secret_env``
name environment variables that must be set when warden starts, and that are not
``WARDEN_*`` names (every ``WARDEN_*`` variable is a setting, ``config/loading.py``).
Each problem is one ``ConfigError`` naming the key (``approvals.webhooks[0].url``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import msgspec
from warden.config.errors import ConfigError

__all__ = ("WEBHOOKS_KEY", "WebhookSettings", "check_webhooks", "shown_url", "webhook_url")

WEBHOOKS_KEY = "approvals.webhooks"
"""Where the webhooks sit in the settings: the prefix of every key a check names."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USERINFO = re.compile(r"(?<=//)[^/?#]*@")


class WebhookSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One receiver of approval notices (``[[approvals.webhooks]]``)."""

    url: str | None = None
    """Where notices are POSTed: ``http://`` or ``https://``. Logged without its query."""
    url_env: str | None = None
    """The environment variable holding the URL instead, for a URL that is a credential
    (a Slack incoming webhook's is): logged as its origin only."""
    secret_env: str | None = None
    """The environment variable holding the HMAC-SHA256 secret the body is signed with
    (``X-Warden-Signature``); ``None``: not signed."""
    timeout_s: float = 10.0
    """The deadline of one attempt, from connecting to the answer's status line."""
    attempts: int = 5
    """Requests made for one notice at most, the first included."""
    retry_base_s: float = 1.0
    """The backoff before retry ``n`` is uniform up to ``retry_base_s * 2**n``..."""
    retry_max_s: float = 30.0
    """... capped at ``retry_max_s``."""
    retry_after_cap_s: float = 60.0
    """A 429 answer's ``retry-after`` is waited, up to this."""

    def __repr__(self) -> str:
        # Settings are printed and logged whole: the URL's query may hold a token.
        shown = "None" if self.url is None else repr(shown_url(self.url))
        return (f"WebhookSettings(url={shown}, url_env={self.url_env!r}, "
                f"secret_env={self.secret_env!r}, timeout_s={self.timeout_s!r}, "
                f"attempts={self.attempts!r})")


def shown_url(url: str) -> str:
    """``url`` as a log or an error may show it: without its query, fragment, user and
    password (any of which may be a token). Pure; never raises."""
    return _USERINFO.sub("", url.split("#", 1)[0].split("?", 1)[0])


def _check_env_name(key: str, name: str, environ: Mapping[str, str]) -> None:
    if not _ENV_NAME.fullmatch(name):
        raise ConfigError(key, name, "is not an environment variable name")
    if name.upper().startswith("WARDEN_"):
        raise ConfigError(key, name, "must not be a WARDEN_* variable: those are settings")
    if not environ.get(name):
        raise ConfigError(key, name, "names an environment variable that is not set")


def _check_url(key: str, url: str, *, shown: object) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(key, shown, f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(key, shown, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise ConfigError(key, shown, "has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(key, shown,
                          "must not hold a user or password (sign with secret_env instead)")


def webhook_url(hook: WebhookSettings, environ: Mapping[str, str]) -> str:
    """The URL of ``hook``: ``url``, or the value of ``url_env`` in ``environ``. Pure;
    raises ``KeyError`` when ``url_env`` is not set (``check_webhooks`` says so first)."""
    if hook.url is not None:
        return hook.url
    assert hook.url_env is not None
    return environ[hook.url_env]


def check_webhooks(
    webhooks: Sequence[WebhookSettings], environ: Mapping[str, str], *,
    key: str = WEBHOOKS_KEY,
) -> None:
    """Return if every webhook is usable with ``environ`` (``os.environ`` at start);
    pure. Raises ``ConfigError`` naming the first bad key; a value read from the
    environment is never in the message (a URL may be a credential)."""
    for index, hook in enumerate(webhooks):
        at = f"{key}[{index}]"
        if (hook.url is None) == (hook.url_env is None):
            raise ConfigError(f"{at}.url", hook.url and shown_url(hook.url),
                              "set exactly one of url and url_env")
        if hook.url is not None:
            _check_url(f"{at}.url", hook.url, shown=shown_url(hook.url))
        if hook.url_env is not None:
            _check_env_name(f"{at}.url_env", hook.url_env, environ)
            _check_url(f"{at}.url_env", environ[hook.url_env],
                       shown=f"<the value of {hook.url_env}>")
        if hook.secret_env is not None:
            _check_env_name(f"{at}.secret_env", hook.secret_env, environ)
        for name in ("timeout_s", "retry_base_s", "retry_max_s"):
            value = getattr(hook, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{at}.{name}", value, "must be a number above 0")
        if hook.retry_max_s < hook.retry_base_s:
            raise ConfigError(f"{at}.retry_max_s", hook.retry_max_s,
                              f"is below {at}.retry_base_s = {hook.retry_base_s:g}")
        if not (math.isfinite(hook.retry_after_cap_s) and hook.retry_after_cap_s >= 0):
            raise ConfigError(f"{at}.retry_after_cap_s", hook.retry_after_cap_s,
                              "must be a number >= 0")
        if hook.attempts < 1:
            raise ConfigError(f"{at}.attempts", hook.attempts, "must be at least 1")
