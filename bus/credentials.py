"""How a connection proves who it is: NATS's standard credentials, TLS, and the inbox
prefix of the identity it connects as.

``Credentials`` is what ``open_bus`` takes. At most one way of authenticating is used,
in this order: a ``.creds`` file (JWT and seed, the operator/account model), an nkey seed
file (the embedded server's identities), a user and password, a token. TLS (a CA to
verify the server, a client certificate and key for mutual TLS) combines with any of
them. ``Credentials.from_settings`` reads them from ``NatsSettings`` (config file or
``WARDEN_NATS_*`` environment).

Secrets stay out of sight: the password and token are not in ``repr``; a seed or a
``.creds`` file is read by nats-py when it signs the server's nonce, never by us into a
string that could be logged. Files are checked to exist up front, so a typo is one
``CredentialsError`` naming the file, not a connection that times out.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from warden.bus.errors import CredentialsError
from warden.bus.identities import Identity, inbox_prefix, seed_path

if TYPE_CHECKING:
    from warden.config.settings import NatsSettings

__all__ = ("Credentials",)

_SECRET_FIELDS = frozenset({"password", "token"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """Credentials and TLS options of one connection. Every field is optional; an empty
    ``Credentials()`` connects anonymously (refused by warden's embedded server)."""

    creds: Path | None = None
    """A ``.creds`` file: user JWT and nkey seed (``nsc generate creds``)."""
    nkey_seed: Path | None = None
    """A file holding a user nkey seed (``SU...``), as ``<data_dir>/credentials/*.nk``."""
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls_ca: Path | None = None
    """CA certificates (PEM) that the server's certificate must chain to."""
    tls_cert: Path | None = None
    """Client certificate (PEM) for mutual TLS; needs ``tls_key``."""
    tls_key: Path | None = None
    inbox_prefix: str | None = None
    """The connection's inbox prefix, ``_INBOX_<identity>`` (``bus.identities``); ``None``
    is nats-py's ``_INBOX``, which warden's permissions do not admit."""

    def __repr__(self) -> str:
        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            shown.append(f"{item.name}={'***' if item.name in _SECRET_FIELDS else repr(value)}")
        return f"Credentials({', '.join(shown)})"

    def describe(self) -> str:
        """How this connects, for an error message: never a secret."""
        if self.creds is not None:
            return f"creds file {str(self.creds)!r}"
        if self.nkey_seed is not None:
            return f"nkey seed file {str(self.nkey_seed)!r}"
        if self.user is not None:
            return f"user {self.user!r} and password"
        if self.token is not None:
            return "token"
        return "an anonymous connection (no credentials)"

    @classmethod
    def for_identity(cls, directory: Path, identity: Identity) -> Credentials:
        """Connect as ``identity`` with its seed in ``directory`` (``<identity>.nk``)."""
        return cls(nkey_seed=seed_path(directory, identity), inbox_prefix=inbox_prefix(identity))

    @classmethod
    def from_settings(cls, nats: NatsSettings, identity: Identity) -> Credentials:
        """The credentials ``nats`` configures, with ``identity``'s inbox prefix."""
        return cls(
            creds=_path(nats.creds), nkey_seed=_path(nats.nkey_seed), user=nats.user,
            password=nats.password, token=nats.token, tls_ca=_path(nats.tls_ca),
            tls_cert=_path(nats.tls_cert), tls_key=_path(nats.tls_key),
            inbox_prefix=inbox_prefix(identity),
        )

    def connect_options(self) -> dict[str, object]:
        """Keyword arguments for nats-py's ``connect``. Blocking (reads the TLS files).

        Raises ``CredentialsError`` naming a file that is missing or unusable.
        """
        options: dict[str, object] = {}
        if self.creds is not None:
            options["user_credentials"] = str(_existing(self.creds))
        elif self.nkey_seed is not None:
            options["nkeys_seed"] = str(_existing(self.nkey_seed))
        elif self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        elif self.token is not None:
            options["token"] = self.token
        context = self._tls_context()
        if context is not None:
            options["tls"] = context
        if self.inbox_prefix is not None:
            options["inbox_prefix"] = self.inbox_prefix
        return options

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls_ca is None and self.tls_cert is None and self.tls_key is None:
            return None
        if (self.tls_cert is None) != (self.tls_key is None):
            given = self.tls_cert or self.tls_key
            assert given is not None
            raise CredentialsError(given, "needs its pair: set both tls_cert and tls_key")
        try:
            context = ssl.create_default_context(
                cafile=str(_existing(self.tls_ca)) if self.tls_ca else None
            )
        except ssl.SSLError as exc:
            assert self.tls_ca is not None
            raise CredentialsError(self.tls_ca, f"holds no usable CA certificate: {exc}") from exc
        if self.tls_cert is not None and self.tls_key is not None:
            try:
                context.load_cert_chain(str(_existing(self.tls_cert)), str(_existing(self.tls_key)))
            except ssl.SSLError as exc:
                raise CredentialsError(
                    self.tls_cert, f"and its key do not make a certificate chain: {exc.reason}"
                ) from exc
        return context


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value).expanduser()


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise CredentialsError(path, "does not exist or is not a file")
    return path
