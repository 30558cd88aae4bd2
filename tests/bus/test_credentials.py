"""NATS's standard credentials against a real nats-server: a ``.creds`` file (operator
mode), user and password, token, TLS (server verification and mutual TLS). The nkey
identities are pinned in ``tests/integration/test_bus_identities.py``."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import nkeys
import pytest
from warden.bus.connection import open_bus
from warden.bus.credentials import Credentials
from warden.bus.embedded import EmbeddedServer, open_embedded_server
from warden.bus.errors import BusConnectionError

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@asynccontextmanager
async def _server(tmp_path: Path, config: str) -> AsyncIterator[EmbeddedServer]:
    async with open_embedded_server(tmp_path / "nats", authorization=config) as server:
        yield server


async def _round_trip(url: str, credentials: Credentials) -> bytes:
    async with open_bus(url, connect_timeout=3, credentials=credentials) as bus:
        async def echo(envelope):  # type: ignore[no-untyped-def]
            await bus.respond(envelope, envelope.data)

        async with bus.serve("test.echo", echo):
            return await bus.request("test.echo", b"hello", timeout=3)


async def test_user_and_password_connect_and_a_wrong_password_is_refused_unshown(
    tmp_path: Path,
) -> None:
    config = 'authorization { user: "warden", password: "s3cret-pw" }\n'
    async with _server(tmp_path, config) as server:
        assert await _round_trip(server.url, Credentials(user="warden", password="s3cret-pw"))
        with pytest.raises(BusConnectionError) as refused:
            await _round_trip(server.url, Credentials(user="warden", password="wrong-pw"))
    assert "authorization violation" in str(refused.value)
    assert "wrong-pw" not in str(refused.value) and "user 'warden'" in str(refused.value)


async def test_a_token_connects_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    async with _server(tmp_path, 'authorization { token: "t0k3n-abc" }\n') as server:
        assert await _round_trip(server.url, Credentials(token="t0k3n-abc"))
        with pytest.raises(BusConnectionError, match="authorization violation") as refused:
            await _round_trip(server.url, Credentials(token="other"))
    assert "other" not in str(refused.value)


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    directory.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=warden test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=directory)
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"),
                        ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=warden {name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
        (directory / f"{name}.ext").write_text(extra + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                 "-out", f"{name}.pem", cwd=directory)
    return {p.stem + p.suffix: p for p in directory.iterdir()}


needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="no openssl binary to make test certificates: TLS options were not checked",
)


@needs_openssl
async def test_tls_verifies_the_server_with_the_given_ca(tmp_path: Path) -> None:
    certs = await anyio.to_thread.run_sync(_certificates, tmp_path / "certs")
    config = (f'tls {{ cert_file: "{certs["server.pem"]}", key_file: "{certs["server.key"]}" }}\n'
              'authorization { token: "t0k3n" }\n')
    async with _server(tmp_path, config) as server:
        assert await _round_trip(server.url, Credentials(token="t0k3n",
                                                         tls_ca=certs["ca.pem"]))
        with pytest.raises(BusConnectionError, match="TLS failed") as failed:
            await _round_trip(server.url, Credentials(token="t0k3n"))  # an unknown CA
    assert "\n" not in str(failed.value) and not failed.value.retryable


@needs_openssl
async def test_mutual_tls_needs_the_client_certificate(tmp_path: Path) -> None:
    certs = await anyio.to_thread.run_sync(_certificates, tmp_path / "certs")
    config = (f'tls {{ cert_file: "{certs["server.pem"]}", key_file: "{certs["server.key"]}",'
              f' ca_file: "{certs["ca.pem"]}", verify: true }}\n')
    async with _server(tmp_path, config) as server:
        assert await _round_trip(server.url, Credentials(
            tls_ca=certs["ca.pem"], tls_cert=certs["client.pem"], tls_key=certs["client.key"]))
        with pytest.raises(BusConnectionError):  # the server closes the handshake
            await _round_trip(server.url, Credentials(tls_ca=certs["ca.pem"]))


# -- a .creds file, on a server in operator mode --------------------------------------------
# nsc is not installed here, so the JWTs are minted below as nsc would: a self-signed
# operator, an account signed by it, a user signed by the account (NATS JWT v2, ed25519).


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(bytes(nkeys.encode_seed(os.urandom(32), prefix)))


def _jwt(issuer: nkeys.KeyPair, subject: nkeys.KeyPair, kind: str, nats: dict[str, object]) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {
        "jti": base64.b32encode(os.urandom(20)).decode().rstrip("="),
        "iat": int(time.time()), "iss": issuer.public_key.decode(),
        "name": kind, "sub": subject.public_key.decode(),
        "nats": {"type": kind, "version": 2, **nats},
    }
    body = _b64(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64(issuer.sign(f'{header}.{body}'.encode()))}"


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


def _creds(account: nkeys.KeyPair, path: Path) -> Path:
    user = _keypair(nkeys.PREFIX_BYTE_USER)
    token = _jwt(account, user, "user", {"pub": {}, "sub": {}, **_UNLIMITED})
    path.write_text(
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n", encoding="utf-8")
    path.chmod(0o600)
    return path


async def test_a_creds_file_connects_in_operator_mode_and_a_foreign_one_is_refused(
    tmp_path: Path,
) -> None:
    operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account, system, stranger = (_keypair(nkeys.PREFIX_BYTE_ACCOUNT) for _ in range(3))
    limits = {"limits": {**_UNLIMITED, "imports": -1, "exports": -1, "wildcards": True,
                         "conn": -1, "leaf": -1}}
    preload = {key.public_key.decode(): _jwt(operator, key, "account", limits)
               for key in (account, system)}
    config = (f"operator: {_jwt(operator, operator, 'operator', {})}\n"
              f"system_account: {system.public_key.decode()}\n"  # JetStream needs one
              "resolver: MEMORY\n"
              "resolver_preload: {\n"
              + "".join(f"  {key}: {token}\n" for key, token in preload.items()) + "}\n")
    async with _server(tmp_path, config) as server:
        good = _creds(account, tmp_path / "good.creds")
        assert await _round_trip(server.url, Credentials(creds=good)) == b"hello"
        # A user of an account this operator never signed: the server refuses it.
        foreign = _creds(stranger, tmp_path / "foreign.creds")
        with pytest.raises(BusConnectionError, match="authorization violation") as refused:
            await _round_trip(server.url, Credentials(creds=foreign))
    assert "SEED" not in str(refused.value) and "foreign.creds" in str(refused.value)
