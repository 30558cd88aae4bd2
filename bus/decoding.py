"""Decoding under limits: how every message from outside (a task, an API request) is read.

Anyone who may publish on ``warden.tasks`` or ``warden.api.<daemon>.*`` chooses the bytes,
so nothing here may raise for bad input, and nothing may cost more than the size of the
input. ``decode`` checks, in this order, and stops at the first problem:

1. **size**: at most ``max_bytes`` (checked before anything reads the payload);
2. **depth**: at most ``max_depth`` nested arrays and objects. msgspec decodes recursively
   and raises ``RecursionError`` past the interpreter's limit: measured, six objects
   nested 10,000 deep crashed the API past its restart intensity and stopped the daemon
   (issue 9). Counted over the bytes with strings removed, so brackets in text are free;
3. **UTF-8, JSON, types, numbers**: msgspec's own validation (invalid UTF-8, malformed
   JSON, a wrong type, a float out of range such as ``1e400``, ``NaN``), plus the Structs'
   ``Meta`` constraints (a ``limit`` past its maximum) and ``forbid_unknown_fields`` on
   API requests;
4. **version**: a message whose ``v`` is not ``WIRE_VERSION`` is refused by name.

The result is the decoded message or an ``InvalidMessage`` that names the field (when one
is at fault) and the problem, ready for an ``ErrorReply`` or a ``rejected`` run. Any
other exception is a bug in this module; it is caught too, and reported as one.
"""

from __future__ import annotations

import math
import re
from typing import TypeVar

import msgspec

__all__ = ("MAX_DEPTH", "WIRE_VERSION", "InvalidMessage", "decode", "depth_exceeds",
           "field_of")

T = TypeVar("T")

WIRE_VERSION = 1
"""The only ``v`` this warden reads; a newer one is a new tag or a refused message."""
MAX_DEPTH = 32
"""Nesting allowed in a message from outside; warden's own messages nest 3 deep at most."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


class InvalidMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Why a message was refused: ``field`` at fault (``None``: the whole message)."""

    field: str | None
    problem: str

    @property
    def error(self) -> str:
        """One line: the field, if any, and the problem."""
        return f"field {self.field!r}: {self.problem}" if self.field else self.problem


def depth_exceeds(data: bytes, max_depth: int) -> bool:
    """Whether JSON ``data`` nests arrays and objects deeper than ``max_depth``.

    Linear in ``len(data)``, never recursive; malformed JSON is left for the decoder.
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False  # the common case: not even enough brackets to nest that deep
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def field_of(message: str) -> str | None:
    """The field a msgspec error message names (``... - at `$.budget_usd```), if any."""
    if "`$." in message:
        return message.split("`$.", 1)[1].split("`", 1)[0].split("[", 1)[0]
    for marker in ("missing required field `", "unknown field `"):
        if marker in message:
            return message.split(marker, 1)[1].split("`", 1)[0]
    return None


def decode(
    decoder: msgspec.json.Decoder[T], data: bytes, *, max_bytes: int,
    max_depth: int = MAX_DEPTH, what: str = "message",
) -> T | InvalidMessage:
    """Decode ``data`` with ``decoder`` under the limits above. Never raises.

    ``what`` names the message in problems (``"submission"``, ``"runs request"``).
    """
    if len(data) > max_bytes:
        return InvalidMessage(field=None, problem=f"{what} is {len(data)} bytes, larger than "
                                                  f"the limit ({max_bytes})")
    try:
        if depth_exceeds(data, max_depth):
            return InvalidMessage(field=None, problem=f"{what} nests deeper than {max_depth} "
                                                      "levels")
        message = decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        text = str(exc)
        return InvalidMessage(field=field_of(text), problem=f"invalid {what}: {text}")
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:  # a bug: say so
        return InvalidMessage(field=None, problem=f"{what} could not be decoded: {exc!r}")
    version = getattr(message, "v", WIRE_VERSION)
    if version != WIRE_VERSION:
        return InvalidMessage(field="v", problem=f"version {version!r} is not supported "
                                                 f"(this warden reads v{WIRE_VERSION})")
    for name in getattr(message, "__struct_fields__", ()):
        value = getattr(message, name)
        if isinstance(value, float) and not math.isfinite(value):
            return InvalidMessage(field=name, problem=f"{value!r} is not a finite number")
    return message
