"""Signed approval decisions: the operator signs, the daemon verifies.

A decision (``wire.ApprovalDecision``) is encoded once to JSON; that exact text is signed
with the operator identity's nkey seed (ed25519) and travels as ``body`` of a
``wire.SignedDecision`` beside the signature and the signer's public key. The daemon
verifies the signature over the bytes it received, then decodes them: what it applies is
exactly what was signed, and a message forged on the subject (by anyone who could publish
there if the server's permissions were wrong) fails here unless it was signed with the
operator's seed. Which key counts as the operator's is the caller's to say
(``opened.signer``): this module only says whether ``signer`` signed ``body``.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import NamedTuple

import msgspec
import nacl.exceptions
import nacl.signing
import nkeys
from warden.bus.errors import CredentialsError
from warden.bus.wire import ApprovalDecision, SignedDecision, decision_decoder, encoder

__all__ = ("OpenedDecision", "open_signed", "seed_public_key", "sign_decision", "sign_with_seed")


class OpenedDecision(NamedTuple):
    """A decision whose signature checked out, and the public key that signed it."""

    decision: ApprovalDecision
    signer: str


def sign_decision(decision: ApprovalDecision, seed_file: Path) -> SignedDecision:
    """``decision`` signed with the user nkey seed in ``seed_file``. Blocking file read.

    Raises ``CredentialsError`` naming the file (never its content) when it holds no
    usable user seed.
    """
    try:
        seed = bytearray(seed_file.read_bytes().strip())
    except OSError as exc:
        raise CredentialsError(seed_file, f"cannot be read: {exc.strerror}") from exc
    try:
        return sign_with_seed(decision, seed)
    except ValueError as exc:
        raise CredentialsError(seed_file, "holds a malformed nkey seed") from exc


def sign_with_seed(decision: ApprovalDecision, seed: bytes | bytearray) -> SignedDecision:
    """``decision`` signed with the user nkey ``seed`` held in memory (the dashboard's
    session). Pure. Raises ``ValueError`` (never quoting the seed) when it is not a
    usable user seed."""
    pair = _pair(seed)
    try:
        body = encoder.encode(decision)
        signature = pair.sign(body)
        signer = pair.public_key.decode()
    finally:
        pair.wipe()
    return SignedDecision(body=body.decode(), signature=_b64(signature), signer=signer)


def seed_public_key(seed: bytes | bytearray) -> str:
    """The public key (``U...``) of the user nkey ``seed``. Pure. Raises ``ValueError``
    (never quoting the seed) when it is not a user seed."""
    pair = _pair(seed)
    try:
        return str(pair.public_key.decode())
    finally:
        pair.wipe()


def _pair(seed: bytes | bytearray) -> nkeys.KeyPair:
    material = bytearray(seed.strip())
    if not material.startswith(b"SU"):
        raise ValueError("not a user nkey seed (SU...)")
    try:
        return nkeys.from_seed(material)
    except (nkeys.NkeysError, ValueError, TypeError, binascii.Error) as exc:
        raise ValueError("a malformed nkey seed") from exc


def open_signed(signed: SignedDecision) -> OpenedDecision | None:
    """The decision in ``signed`` when ``signed.signer`` signed its body, else ``None``
    (a bad signature, a malformed key or body). Pure; never raises."""
    try:
        key = _verify_key(signed.signer)
        key.verify(signed.body.encode(), _unb64(signed.signature))
    except (nacl.exceptions.CryptoError, ValueError, binascii.Error, TypeError):
        return None
    try:
        decision = decision_decoder.decode(signed.body)
    except msgspec.DecodeError:
        return None
    return OpenedDecision(decision, signed.signer)


def _verify_key(public: str) -> nacl.signing.VerifyKey:
    """The ed25519 key of a public user nkey (``U...``: base32 of the prefix byte, the
    32-byte key and a CRC16); raises ``ValueError`` for anything else."""
    raw = base64.b32decode(public + "=" * (-len(public) % 8))
    if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
        raise ValueError("not a public user nkey")
    if nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
        raise ValueError("the public nkey's checksum does not match")
    return nacl.signing.VerifyKey(raw[1:-2])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
