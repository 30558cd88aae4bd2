"""Who may do what on the bus: warden's four NATS identities, their least-privilege
permissions, and their nkey credentials.

The identities, each a NATS user with its own nkey and its own inbox prefix:

- ``daemon``: the supervisor. Publishes and subscribes under ``warden.>``, drives
  JetStream (``$JS.API.>``, acks, flow control, ``$KV.>``), serves ``$SRV.>`` discovery,
  and answers requests sent to it (``allow_responses``).
- ``worker``: joins ``warden.work.*`` in queue group ``workers`` and answers the requests
  it is handed (``allow_responses``); it may publish nothing else, so it can neither
  submit (``warden.tasks``), nor call the API, nor emit events, nor approve.
- ``client``: submits (``warden.tasks``, ``warden.api.submit``), calls the API's read and
  control verbs, discovers services (``$SRV.>``), follows a run's events (direct gets
  of ``WARDEN_EVENTS``, no consumer) and waits on ``warden.done.*``. Never
  ``warden.work.>``.
- ``operator``: the client's rights plus administration (``warden.admin.>``, the API's
  ``dlq``, ``dlq_retry`` and ``approvals``) and approval decisions
  (``warden.approvals.>``: the only identity but the daemon that may publish there).

Inbox isolation: identity ``x`` connects with inbox prefix ``_INBOX_x`` and may subscribe
to ``_INBOX_x.>`` only, so no other identity can read the replies sent to it (the
daemon's requests to workers carry model output back). nats-py's request, JetStream and
ordered-consumer code all build their inboxes from the connection's prefix.

``PERMISSIONS`` is built from ``subjects``; ``render_authorization`` turns it into the
``authorization`` block of a nats-server config, which the embedded server runs with and
the README shows (``tests/bus/test_identities.py`` checks the README's copy).

Credentials: ``ensure_seeds`` creates one nkey user seed per identity in a directory
(mode 0700; each seed file 0600, written atomically) at the first start, and reuses them
after. A seed never leaves its file: not in a log, an error message or a repr.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nkeys
import structlog
from warden.bus import subjects
from warden.bus.errors import CredentialsError

__all__ = (
    "IDENTITIES",
    "PERMISSIONS",
    "PLACEHOLDER_KEYS",
    "Identity",
    "Permissions",
    "ensure_seeds",
    "inbox_prefix",
    "is_reply_to",
    "public_key",
    "render_authorization",
    "seed_path",
)

log = structlog.get_logger(__name__)

Identity = Literal["daemon", "worker", "client", "operator"]
IDENTITIES: tuple[Identity, ...] = ("daemon", "worker", "client", "operator")

SEED_SUFFIX = ".nk"


@dataclass(frozen=True, slots=True)
class Permissions:
    """One identity's NATS permissions, as the server enforces them. Subjects may hold
    wildcards; a subscribe entry ``"subject queue"`` allows that queue group only."""

    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    allow_responses: bool


def inbox_prefix(identity: Identity) -> str:
    """The inbox prefix identity ``identity`` connects with: ``_INBOX_<identity>``."""
    return f"_INBOX_{identity}"


def is_reply_to(identity: Identity, reply: str) -> bool:
    """Whether the reply subject ``reply`` lies in ``identity``'s inboxes (``_INBOX_x.``).

    Under these permissions only ``identity`` reads there, and only the daemon may publish
    on ``warden.work.*``: a work request whose reply is not the daemon's inbox did not come
    from the daemon. A worker can check it as a second line: a message JetStream delivers
    to a consumer's delivery subject carries ``$JS.ACK...`` as its reply, and on a server
    whose permissions were pasted with mistakes, a stranger's request carries its own.
    """
    return reply.startswith(inbox_prefix(identity) + ".")


def _api(*verbs: subjects.ApiVerb) -> tuple[str, ...]:
    # Every daemon's subject of each verb (warden.api.<daemon_id>.<verb>): the identities
    # are the same on every daemon of a server, which daemon is the subject's choice.
    return tuple(f"{subjects.API_PREFIX}.*.{verb}" for verb in verbs)


_CLIENT_VERBS: tuple[subjects.ApiVerb, ...] = ("submit", "runs", "show", "cancel", "resume",
                                               "ping", "spend")
_OPERATOR_VERBS: tuple[subjects.ApiVerb, ...] = ("dlq", "dlq_retry", "approvals", "calls")

# What bus.follow (jetstream.follow) sends: direct gets of the events stream, answered in
# the connection's own inbox. Not a consumer: whoever may create one chooses its delivery
# subject, and JetStream delivers there whatever the creator's publish permissions (a
# client's consumer delivering onto warden.work.code was measured to work).
_FOLLOW_EVENTS = (f"$JS.API.DIRECT.GET.{subjects.EVENTS_STREAM}",)

_WORK_ALL = "warden.work.>"

_CLIENT_PUBLISH = (subjects.TASKS, *_api(*_CLIENT_VERBS), "$SRV.>", *_FOLLOW_EVENTS)
_CLIENT_SUBSCRIBE = (subjects.DONE_WILDCARD, subjects.EVENTS_WILDCARD)

PERMISSIONS: Mapping[Identity, Permissions] = {
    "daemon": Permissions(
        publish_allow=("warden.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "$SRV.>"),
        publish_deny=(),
        subscribe_allow=("warden.>", "$SRV.>", f"{inbox_prefix('daemon')}.>"),
        allow_responses=True,
    ),
    "worker": Permissions(
        publish_allow=(),  # rendered as deny ">": only the replies allow_responses permits
        publish_deny=(">",),
        subscribe_allow=(f"warden.work.* {subjects.WORK_QUEUE_GROUP}",
                         f"{inbox_prefix('worker')}.>"),
        allow_responses=True,
    ),
    "client": Permissions(
        publish_allow=_CLIENT_PUBLISH,
        publish_deny=(_WORK_ALL,),
        subscribe_allow=(*_CLIENT_SUBSCRIBE, f"{inbox_prefix('client')}.>"),
        allow_responses=False,
    ),
    "operator": Permissions(
        publish_allow=(*_CLIENT_PUBLISH, *_api(*_OPERATOR_VERBS), "warden.admin.>",
                       "warden.approvals.>"),
        publish_deny=(_WORK_ALL,),
        subscribe_allow=(*_CLIENT_SUBSCRIBE, "warden.approvals.>",
                         f"{inbox_prefix('operator')}.>"),
        allow_responses=False,
    ),
}
"""Each identity's permissions; the one table the server config and the README render."""


# -- the server's authorization block ----------------------------------------------------

PLACEHOLDER_KEYS: Mapping[Identity, str] = {i: f"<{i} public nkey U...>" for i in IDENTITIES}
"""Stand-ins for public keys, in the block the README shows (``warden nats-permissions``
without ``--keys``); replace each with the public key of that identity's seed."""


def _quoted(items: tuple[str, ...]) -> str:
    # Always quoted: unquoted, nats-server's config reads "$JS..." as a variable.
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def render_authorization(public_keys: Mapping[Identity, str]) -> str:
    """The ``authorization { users = [...] }`` block of a nats-server config that admits
    exactly the identities in ``public_keys`` (nkey public keys, ``U...``), each with
    its ``PERMISSIONS``. No anonymous user, no ``no_auth_user``. Public keys only: the
    block holds no secret. Pure; raises ``KeyError`` for an unknown identity.
    """
    lines = ["authorization {", "  users = ["]
    for identity, key in public_keys.items():
        perms = PERMISSIONS[identity]
        publish = [f"allow: {_quoted(perms.publish_allow)}"] if perms.publish_allow else []
        if perms.publish_deny:
            publish.append(f"deny: {_quoted(perms.publish_deny)}")
        lines += [
            f"    # {identity}",
            "    {",
            f'      nkey: "{key}"',
            "      permissions: {",
            f"        publish: {{ {', '.join(publish)} }}",
            f"        subscribe: {{ allow: {_quoted(perms.subscribe_allow)} }}",
        ]
        if perms.allow_responses:
            lines.append("        allow_responses: true")
        lines += ["      }", "    }"]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


# -- nkey seeds --------------------------------------------------------------------------


def seed_path(directory: Path, identity: Identity) -> Path:
    """Where identity ``identity``'s seed lives in ``directory``: ``<identity>.nk``."""
    return directory / f"{identity}{SEED_SUFFIX}"


def ensure_seeds(directory: Path) -> dict[Identity, Path]:
    """Make sure ``directory`` holds a user nkey seed for every identity; return their
    paths. Blocking file I/O (a few small files, once at start-up).

    Creates ``directory`` with mode 0700 and each missing seed with mode 0600, written to
    a temporary file and renamed, so a crash never leaves half a seed. An existing seed is
    reused; one readable by group or others is tightened to 0600 (logged with its path,
    never its content). Raises ``CredentialsError`` for a seed that cannot be read or is
    not a user seed.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(directory, 0o700)
    paths: dict[Identity, Path] = {}
    for identity in IDENTITIES:
        path = seed_path(directory, identity)
        if path.exists():
            _tighten(path, 0o600)
            public_key(path)  # refuse a broken seed now, not at the first connection
        else:
            _write_seed(path, _new_user_seed())
            log.info("credential_created", identity=identity, path=str(path))
        paths[identity] = path
    return paths


def public_key(seed_file: Path) -> str:
    """The public key (``U...``) of the user nkey seed in ``seed_file``.

    Raises ``CredentialsError`` naming the file (never its content) when it cannot be
    read or holds no user seed.
    """
    try:
        seed = bytearray(seed_file.read_bytes().strip())
    except OSError as exc:
        raise CredentialsError(seed_file, f"cannot be read: {exc.strerror}") from exc
    if not seed.startswith(b"SU"):
        raise CredentialsError(seed_file, "does not hold a user nkey seed (SU...)")
    try:
        pair = nkeys.from_seed(seed)
        key = pair.public_key.decode()
        pair.wipe()
    except (nkeys.NkeysError, ValueError) as exc:
        raise CredentialsError(seed_file, "holds a malformed nkey seed") from exc
    return key


def _new_user_seed() -> bytes:
    # An nkey user seed is a random ed25519 seed (32 bytes) encoded with the user prefix.
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def _write_seed(path: Path, seed: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(seed + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~mode:
        path.chmod(mode)
        log.warning("credential_mode_tightened", path=str(path), was=oct(current),
                    now=oct(mode))
