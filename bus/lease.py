"""A lease: a lock in a JetStream KV bucket that expires unless its holder refreshes it.

Used for "one intake per task stream" (``subjects.INTAKE_LOCK``): a second daemon on the
same NATS server must not silently split the runs between two journals. The rules:

- the bucket's entries expire ``ttl`` seconds after they were written (the stream's
  ``max_age``; history 1), so a holder that dies without releasing (SIGKILL, power loss,
  a partition) loses the lease at most ``ttl`` seconds after its last refresh;
- the value is ``"<holder> <note>"``: the holder's id, then words for people (where it
  runs); ownership is the id alone;
- ``acquire`` is create-if-absent: it takes the key when nobody holds it, or when the
  holder named in it is the caller (a restart of the same daemon takes its own lease at
  once); otherwise it returns the value (who holds it) and changes nothing;
- ``refresh`` is compare-and-set on the revision the caller last wrote: a lease that
  expired and was taken by another holder meanwhile is reported lost (``False``), never
  overwritten; a holder refreshes every ``ttl / 3``;
- ``release`` deletes the key if it is still the caller's (shielded, best effort), so a
  clean stop hands over at once.

Not on any hot path: one write per ``ttl / 3`` per holder.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
import nats.js.api as jsapi
import nats.js.errors
from warden.bus.errors import FAILURES, translate

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ("Lease", "open_lease")

_STREAM_CONFIG_CONFLICT = 10058  # the bucket exists with another ttl: use it as it is
_CLEANUP_TIMEOUT = 5.0


class Lease:
    """One key of a lease bucket, held (or wanted) by ``holder``. Make it with ``open_lease``."""

    __slots__ = ("_kv", "_revision", "bucket", "holder", "key", "note", "ttl")

    def __init__(
        self, kv: KeyValue, *, bucket: str, key: str, holder: str, note: str, ttl: float
    ) -> None:
        if not holder or " " in holder:
            raise ValueError(f"a lease holder is one word, not {holder!r}")
        self._kv = kv
        self._revision: int | None = None
        self.bucket = bucket
        self.key = key
        self.holder = holder
        self.note = note
        self.ttl = ttl

    @property
    def _value(self) -> bytes:
        return f"{self.holder} {self.note}".encode()

    @property
    def held(self) -> bool:
        """Whether the last ``acquire`` or ``refresh`` left the lease with us."""
        return self._revision is not None

    async def acquire(self) -> str | None:
        """Take the lease if it is free or already ours. Returns ``None`` when we hold it,
        else the holder's name. A cancellation point; raises ``BusError``."""
        value = self._value
        for _ in range(3):  # the holder's entry may expire between our create and get
            try:
                try:
                    self._revision = await self._kv.create(self.key, value)
                    return None
                except nats.js.errors.KeyWrongLastSequenceError:
                    pass
                try:
                    entry = await self._kv.get(self.key)
                except nats.js.errors.KeyNotFoundError:
                    continue  # expired or released meanwhile: try to create it again
                holder = (entry.value or b"").decode("utf-8", errors="replace")
                if holder.split(" ", 1)[0] != self.holder:
                    self._revision = None
                    return holder
                self._revision = await self._kv.update(self.key, value, last=entry.revision)
                return None
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone wrote between our get and update: look again
            except FAILURES as exc:
                raise translate(exc, operation="acquire lease", subject=self.key) from exc
        self._revision = None
        return "(unknown: the lease changed hands while we looked)"

    async def refresh(self) -> bool:
        """Write the lease again, if it is still ours. ``False``: it was lost (expired and
        taken, or deleted). A cancellation point; raises ``BusError`` for anything else."""
        if self._revision is None:
            return False
        try:
            self._revision = await self._kv.update(self.key, self._value,
                                                   last=self._revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            self._revision = None
            return False
        except FAILURES as exc:
            raise translate(exc, operation="refresh lease", subject=self.key) from exc
        return True

    async def release(self) -> None:
        """Give the lease up if it is still ours; best effort, shielded, bounded."""
        revision, self._revision = self._revision, None
        if revision is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT):
            with contextlib.suppress(*FAILURES):
                await self._kv.delete(self.key, last=revision)


async def open_lease(
    js: JetStreamContext, *, bucket: str, key: str, holder: str, note: str, ttl: float
) -> Lease:
    """The lease ``key`` in KV bucket ``bucket`` (created with entries expiring after
    ``ttl`` seconds if absent; an existing bucket is used with its own ttl).

    Does not acquire. Raises ``JetStreamError`` when the bucket cannot be made or bound.
    """
    try:
        try:
            kv = await js.create_key_value(
                jsapi.KeyValueConfig(bucket=bucket, ttl=ttl, history=1)
            )
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_CONFIG_CONFLICT:
                raise
            kv = await js.key_value(bucket)
    except FAILURES as exc:
        raise translate(exc, operation="open lease bucket", subject=bucket) from exc
    return Lease(kv, bucket=bucket, key=key, holder=holder, note=note, ttl=ttl)
