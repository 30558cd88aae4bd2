"""What an approval webhook receives: the notice, its Slack-compatible body, its signature.

The body is one JSON object (README, "Approval webhooks")::

    {"text":   "...",            Slack's fallback and notification text (mrkdwn)
     "blocks": [...],            Slack Block Kit: mrkdwn sections and a context line
     "warden": {...}}            the ApprovalNotice, structured, for any other receiver

so it works as is for a Slack incoming webhook (which reads ``text`` and ``blocks``) and for
a generic receiver (which reads ``warden``, ``"event": "approval_requested"``).

What a model chose (the arguments, a tool's name, the reason a step is tainted) is shown
in Slack escaped: ``&``, ``<`` and ``>`` as entities, so an injected ``<!channel>`` or
``<https://x|click>`` is text, not a mention or a link; and a backtick cannot close the
code span it is shown in. The ``warden`` object carries the values unescaped.

Signing. With a secret, each request (each attempt: a retry is signed afresh) carries::

    X-Warden-Timestamp: <unix seconds, wall clock>
    X-Warden-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    X-Warden-Delivery:  <one id per notice, the same on every attempt and webhook>

A receiver recomputes the HMAC over the raw body bytes, compares in constant time, and
refuses a timestamp older than its tolerance (a replayed request), as
``verify_signature`` does; the delivery id lets it drop a repeat (delivery is at least
once: an attempt whose answer was lost is made again).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import shlex
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec
from warden.config import Risk

__all__ = (
    "ARGUMENTS_SHOWN",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ApprovalNotice",
    "approval_notice",
    "encode_payload",
    "sign",
    "slack_payload",
    "verify_signature",
)

ARGUMENTS_SHOWN = 2000
"""Characters of the canonical arguments a notice carries; the rest is cut (``…``)."""
SIGNATURE_HEADER = "X-Warden-Signature"
TIMESTAMP_HEADER = "X-Warden-Timestamp"
DELIVERY_HEADER = "X-Warden-Delivery"

_SLACK_SECTION_MAX = 3000  # Slack refuses a section whose text is longer
_canonical = msgspec.json.Encoder(order="sorted")
_encoder = msgspec.json.Encoder()
_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")


class ApprovalNotice(msgspec.Struct, frozen=True, kw_only=True, tag_field="event",
                     tag="approval_requested"):
    """An approval request, as webhooks are told of it. Build it with
    ``approval_notice``. New fields get defaults and go last; receivers should ignore
    fields they do not know."""

    approval_id: str
    run_id: str
    step: int
    role: str
    """The worker role whose step asked; ``""`` when the caller did not say."""
    tool: str
    arguments: str
    """The call's canonical arguments (JSON, keys sorted, no whitespace), cut to
    ``ARGUMENTS_SHOWN`` characters for display: the hash binds the whole."""
    arguments_bytes: int
    """The size of the whole canonical arguments in UTF-8 bytes."""
    risk: Risk
    why: str
    """Why it needs a human: ``high risk``, ``step tainted by output of fetch``, ..."""
    hash: str
    """The hash a decision must name (run, call key, tool, canonical arguments)."""
    created_at: datetime
    expires_at: datetime
    approve_command: str
    deny_command: str


def _moment(when: datetime | float) -> datetime:
    return when if isinstance(when, datetime) else datetime.fromtimestamp(when, UTC)


def approval_notice(
    *, approval_id: str, run_id: str, step: int, tool: str, arguments: Mapping[str, object],
    risk: Risk, why: str, hash: str, created_at: datetime | float,
    expires_at: datetime | float, role: str = "",
) -> ApprovalNotice:
    """The notice of one approval request: ``arguments`` in canonical JSON, cut for
    display, the times as UTC datetimes (a float is unix seconds), and the CLI commands
    that decide it. Pure; raises ``msgspec.EncodeError`` for arguments that are not
    JSON."""
    canonical = _canonical.encode(arguments).decode()
    shown = canonical if len(canonical) <= ARGUMENTS_SHOWN else (
        canonical[:ARGUMENTS_SHOWN - 1] + "…")
    quoted = shlex.quote(approval_id)
    return ApprovalNotice(
        approval_id=approval_id, run_id=run_id, step=step, role=role, tool=tool,
        arguments=shown, arguments_bytes=len(canonical.encode()), risk=risk, why=why,
        hash=hash, created_at=_moment(created_at), expires_at=_moment(expires_at),
        approve_command=f"warden approve {quoted}",
        deny_command=f"warden deny {quoted} --reason '...'",
    )


# -- the Slack-compatible body -----------------------------------------------------------


def _escaped(text: str) -> str:
    """Slack mrkdwn text that shows ``text`` as written: no mention, link or code fence."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A zero-width space after each backtick: nothing shown can close a code span.
    return text.replace("`", "`\u200b")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return _PARTIAL_ENTITY.sub("", text[:limit - 1]) + "…"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def slack_payload(notice: ApprovalNotice) -> dict[str, object]:
    """The JSON object POSTed for ``notice``: Slack's ``text`` and ``blocks``, and the
    notice itself under ``warden``. Pure."""
    tool, run, role = _escaped(notice.tool), _escaped(notice.run_id), _escaped(notice.role)
    approve, deny = _escaped(notice.approve_command), _escaped(notice.deny_command)
    text = (f"Approval needed: `{tool}` ({notice.risk} risk) in run `{run}`: "
            f"{_escaped(notice.why)}. `{approve}`")
    head = (f"*Approval needed:* `{tool}`, *{notice.risk}* risk\n"
            f"*Why:* {_escaped(notice.why)}\n"
            f"*Run* `{run}`, step {notice.step}{f', role `{role}`' if role else ''}\n"
            f"*Expires:* {_when(notice.expires_at)}")
    fence = "*Arguments*\n```\n"
    arguments = _cut(_escaped(notice.arguments), _SLACK_SECTION_MAX - len(fence) - 4)
    decide = f"*Approve:* `{approve}`\n*Deny:* `{deny}`"
    context = (f"approval `{_escaped(notice.approval_id)}` · hash `{_escaped(notice.hash)}`"
               f" · requested {_when(notice.created_at)}")
    return {
        "text": _cut(text, _SLACK_SECTION_MAX),
        "blocks": [
            _section(_cut(head, _SLACK_SECTION_MAX)),
            _section(f"{fence}{arguments}\n```"),
            _section(_cut(decide, _SLACK_SECTION_MAX)),
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": _cut(context, _SLACK_SECTION_MAX)}]},
        ],
        "warden": notice,
    }


def encode_payload(notice: ApprovalNotice) -> bytes:
    """The body POSTed for ``notice`` (``slack_payload`` as UTF-8 JSON). Pure."""
    return _encoder.encode(slack_payload(notice))


# -- the signature -----------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Warden-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds,
    as sent in ``X-Warden-Timestamp``): ``sha256=`` and the hex HMAC-SHA256 under
    ``secret`` of ``timestamp``, ``.`` and the body. Pure."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: bytes, *, timestamp: str, body: bytes, signature: str, now: float,
    tolerance_s: float = 300.0,
) -> bool:
    """Whether ``signature`` is ``body``'s at ``timestamp`` under ``secret``, and
    ``timestamp`` is within ``tolerance_s`` of ``now`` (unix seconds): what a receiver
    checks. Compares in constant time; pure; never raises."""
    try:
        sent = float(timestamp)
        expected = sign(secret, timestamp, body)
    except (ValueError, UnicodeEncodeError):
        return False
    if not math.isfinite(sent) or abs(now - sent) > tolerance_s:
        return False
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
