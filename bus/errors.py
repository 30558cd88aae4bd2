"""Errors of the bus, and the one boundary where nats-py exceptions become ours.

::

    BusError                      root; every error carries ``retryable``
    ├── BusConnectionError        cannot reach, or lost, the server
    ├── BusTimeoutError           an operation did not finish in time
    ├── NoRespondersError         a request found nobody subscribed to its subject
    ├── PublishError              a message was refused (too big, bad subject, no stream)
    ├── JetStreamError            the JetStream API answered with an error
    ├── EmbeddedServerError       the embedded nats-server could not start or stop
    └── CredentialsError          a credential file is missing, unreadable or malformed

``retryable`` says whether the same call, made again unchanged a little later, may
succeed: a timeout or a lost connection may heal; a bad subject or a refused credential
will not.

``translate`` is the only place that looks at nats-py exception classes; everything in
``bus/`` that calls nats-py catches ``FAILURES`` and funnels them through it, so nothing
above ``bus/`` ever sees a nats-py type. ``TRANSLATIONS`` names every class nats-py exports;
``tests/bus/test_errors.py`` enumerates ``nats.errors`` and ``nats.js.errors`` so that a
class added by a new SDK release fails the test until someone decides what it means.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import nats.errors as nerr
import nats.js.errors as jerr

__all__ = (
    "FAILURES",
    "TRANSLATIONS",
    "BusConnectionError",
    "BusError",
    "BusTimeoutError",
    "CredentialsError",
    "EmbeddedServerError",
    "JetStreamError",
    "NoRespondersError",
    "PublishError",
    "translate",
)

FAILURES: tuple[type[BaseException], ...] = (nerr.Error, OSError, TimeoutError)
"""What a nats-py call can raise at us: its own errors, and the transport's. Every call
into nats-py catches these and raises ``translate(exc)`` from them."""


class BusError(Exception):
    """Root of every bus error.

    Raised as itself when nats-py fails in a way no subclass names (a slow consumer, a
    message settled twice). ``operation`` is what was attempted (``"request"``,
    ``"publish"``, ``"connect"``), ``subject`` the subject or stream it addressed,
    ``reason`` what blocked it.
    """

    def __init__(
        self,
        reason: str,
        *,
        operation: str = "bus operation",
        subject: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.reason = reason
        self.operation = operation
        self.subject = subject
        self.retryable = retryable
        super().__init__(self._message())

    def _message(self) -> str:
        where = f" on {self.subject!r}" if self.subject is not None else ""
        return f"{self.operation}{where} failed: {self.reason}"


class BusConnectionError(BusError):
    """Raised when the server cannot be reached or refused us, when the connection is
    closed, or when it dropped while a request waited for its reply."""


class BusTimeoutError(BusError):
    """Raised when an operation did not complete within ``timeout`` seconds (``None``
    if unknown)."""

    def __init__(
        self,
        reason: str = "timed out",
        *,
        operation: str = "bus operation",
        subject: str | None = None,
        timeout: float | None = None,
        retryable: bool = True,
    ) -> None:
        self.timeout = timeout
        super().__init__(reason, operation=operation, subject=subject, retryable=retryable)

    def _message(self) -> str:
        where = f" on {self.subject!r}" if self.subject is not None else ""
        after = f" after {self.timeout:g}s" if self.timeout is not None else ""
        return f"{self.operation}{where} timed out{after} ({self.reason})"


class NoRespondersError(BusError):
    """Raised when a request is published on a subject that nobody is subscribed to."""

    def __init__(
        self,
        reason: str = "no responders",
        *,
        operation: str = "request",
        subject: str | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(reason, operation=operation, subject=subject, retryable=retryable)

    def _message(self) -> str:
        where = f" on {self.subject!r}" if self.subject is not None else ""
        return f"{self.operation}{where} found no responders"


class PublishError(BusError):
    """Raised when a message is refused: bad subject or header, too large, or no stream
    took it."""


class JetStreamError(BusError):
    """Raised when the JetStream API answers with an error (``code`` is HTTP-like,
    ``err_code`` the server's JetStream error code, e.g. 10058 for a stream config
    conflict)."""

    def __init__(
        self,
        reason: str,
        *,
        operation: str = "jetstream operation",
        subject: str | None = None,
        code: int | None = None,
        err_code: int | None = None,
        retryable: bool = False,
    ) -> None:
        self.code = code
        self.err_code = err_code
        super().__init__(reason, operation=operation, subject=subject, retryable=retryable)

    def _message(self) -> str:
        codes = ""
        if self.code is not None or self.err_code is not None:
            codes = f" (code={self.code}, err_code={self.err_code})"
        return f"{super()._message()}{codes}"


class EmbeddedServerError(BusError):
    """Raised when the embedded nats-server could not be started, did not become ready,
    or a stale one could not be cleaned up. ``log_tail`` holds the end of its log, if any."""

    def __init__(
        self,
        reason: str,
        *,
        data_dir: Path | None = None,
        log_tail: str = "",
        retryable: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.log_tail = log_tail
        super().__init__(reason, operation="start embedded nats-server", retryable=retryable)

    def _message(self) -> str:
        where = f" in {str(self.data_dir)!r}" if self.data_dir is not None else ""
        head = f"embedded nats-server{where}: {self.reason}"
        if not self.log_tail:
            return head
        return f"{head}\n--- nats-server log (tail) ---\n{self.log_tail}"


class CredentialsError(BusError):
    """Raised when a credential file (nkey seed, ``.creds``, TLS key or certificate) is
    missing, cannot be read, or does not hold what it should. The message names the file,
    never its content."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(problem, operation="read credentials", subject=str(path))

    def _message(self) -> str:
        return f"credential file {str(self.path)!r} {self.problem}"


# -- the translation table --------------------------------------------------------------

# Every exception class nats-py exports -> (our class, retryable). Looked up along the
# exception's MRO, so a subclass raised by an SDK we have not seen still lands sensibly;
# the test pins that every *exported* class has its own explicit row.
TRANSLATIONS: Mapping[type[BaseException], tuple[type[BusError], bool]] = {
    # nats.errors -------------------------------------------------------------------
    nerr.Error: (BusError, False),
    nerr.TimeoutError: (BusTimeoutError, True),
    nerr.FlushTimeoutError: (BusTimeoutError, True),
    nerr.DrainTimeoutError: (BusTimeoutError, False),  # we were closing anyway
    nerr.NoRespondersError: (NoRespondersError, True),  # a worker may come up
    nerr.StaleConnectionError: (BusConnectionError, True),
    nerr.UnexpectedEOF: (BusConnectionError, True),
    nerr.ConnectionReconnectingError: (BusConnectionError, True),
    nerr.NoServersError: (BusConnectionError, True),
    nerr.ProtocolError: (BusConnectionError, True),  # the client reconnects
    nerr.ServerNotInPoolError: (BusConnectionError, True),
    nerr.ConnectionClosedError: (BusConnectionError, False),  # closed is final
    nerr.ConnectionDrainingError: (BusConnectionError, False),
    nerr.SecureConnRequiredError: (BusConnectionError, False),
    nerr.SecureConnWantedError: (BusConnectionError, False),
    nerr.SecureConnFailedError: (BusConnectionError, False),
    nerr.AuthorizationError: (BusConnectionError, False),
    nerr.InvalidUserCredentialsError: (BusConnectionError, False),
    nerr.JsonParseError: (BusConnectionError, False),
    nerr.OutboundBufferLimitError: (PublishError, True),  # fills while reconnecting
    nerr.BadSubjectError: (PublishError, False),
    nerr.BadHeaderError: (PublishError, False),
    nerr.MaxPayloadError: (PublishError, False),
    nerr.SlowConsumerError: (BusError, False),  # messages already dropped
    nerr.BadSubscriptionError: (BusError, False),
    nerr.BadTimeoutError: (BusError, False),
    nerr.InvalidCallbackTypeError: (BusError, False),
    nerr.NotJSMessageError: (BusError, False),
    nerr.MsgAlreadyAckdError: (BusError, False),
    # nats.js.errors ----------------------------------------------------------------
    jerr.Error: (JetStreamError, False),
    jerr.APIError: (JetStreamError, False),
    jerr.ServiceUnavailableError: (JetStreamError, True),  # 503: JetStream not ready yet
    jerr.ServerError: (JetStreamError, True),  # 500
    jerr.NotFoundError: (JetStreamError, False),
    jerr.BadRequestError: (JetStreamError, False),
    jerr.ConsumerInvalidResetError: (JetStreamError, False),
    jerr.ConsumerSequenceMismatchError: (JetStreamError, True),  # consumer resets itself
    jerr.NoStreamResponseError: (PublishError, True),  # no stream (yet) on that subject
    jerr.TooManyStalledMsgsError: (PublishError, True),
    jerr.FetchTimeoutError: (BusTimeoutError, True),
    # Key-value and object store: warden does not use them, but the SDK exports them.
    jerr.BucketNotFoundError: (JetStreamError, False),
    jerr.BadBucketError: (JetStreamError, False),
    jerr.KeyValueError: (JetStreamError, False),
    jerr.KeyDeletedError: (JetStreamError, False),
    jerr.KeyNotFoundError: (JetStreamError, False),
    jerr.KeyWrongLastSequenceError: (JetStreamError, False),
    jerr.NoKeysError: (JetStreamError, False),
    jerr.KeyHistoryTooLargeError: (JetStreamError, False),
    jerr.KeyValueLimitMarkerTTLNotSupportedError: (JetStreamError, False),
    jerr.InvalidKeyError: (JetStreamError, False),
    jerr.InvalidBucketNameError: (JetStreamError, False),
    jerr.InvalidObjectNameError: (JetStreamError, False),
    jerr.BadObjectMetaError: (JetStreamError, False),
    jerr.LinkIsABucketError: (JetStreamError, False),
    jerr.DigestMismatchError: (JetStreamError, False),
    jerr.ObjectNotFoundError: (JetStreamError, False),
    jerr.ObjectDeletedError: (JetStreamError, False),
    jerr.ObjectAlreadyExists: (JetStreamError, False),
}


def _describe(exc: BaseException) -> str:
    # Some SDK errors format fields that may be unset (ConsumerSequenceMismatchError
    # subtracts two Nones); a broken __str__ must not hide the error being translated.
    try:
        text = str(exc)
    except Exception:
        text = ""
    return text or type(exc).__name__


def translate(
    exc: BaseException,
    *,
    operation: str = "bus operation",
    subject: str | None = None,
    timeout: float | None = None,
) -> BusError:
    """Return our error for ``exc``, a nats-py (or transport) exception.

    Does not raise and does not block; the caller raises the result ``from exc``.
    A ``BusError`` is returned unchanged. nats-py classes are looked up along their MRO
    in ``TRANSLATIONS``; bare ``TimeoutError`` becomes ``BusTimeoutError``, ``OSError``
    a retryable ``BusConnectionError``; anything else a non-retryable ``BusError``.
    ``operation``, ``subject`` and ``timeout`` only enrich the message and fields.
    """
    if isinstance(exc, BusError):
        return exc
    reason = _describe(exc)
    for klass in type(exc).__mro__:
        row = TRANSLATIONS.get(klass)
        if row is not None:
            target, retryable = row
            break
    else:
        if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is this since 3.11
            target, retryable = BusTimeoutError, True
        elif isinstance(exc, OSError):
            target, retryable = BusConnectionError, True
        else:
            target, retryable = BusError, False

    if target is BusTimeoutError:
        return BusTimeoutError(
            reason, operation=operation, subject=subject, timeout=timeout, retryable=retryable
        )
    if target is JetStreamError:
        return JetStreamError(
            reason,
            operation=operation,
            subject=subject,
            code=_int_or_none(getattr(exc, "code", None)),
            err_code=_int_or_none(getattr(exc, "err_code", None)),
            retryable=retryable,
        )
    if target is NoRespondersError:
        return NoRespondersError(reason, operation=operation, subject=subject, retryable=retryable)
    return target(reason, operation=operation, subject=subject, retryable=retryable)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None
