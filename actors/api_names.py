"""Tool names as the Messages API accepts them, mapped both ways at the Anthropic boundary.

The API takes a tool name only if it matches ``^[a-zA-Z0-9_-]{1,64}$``; warden's own and
the user's function tools do, an MCP server's tools (``<server>.<tool>``) do not. The
adapter (``anthropic_model.py``) sends each request's tools, and the names in its history
of ``tool_use`` blocks, through ``ApiToolNames.of(specs)``, and reads each ``tool_use`` of
the reply back through the same mapping, so the rest of warden only sees its own names.

The mapping is a pure function of the request's set of tool names, so every turn of a
step (each built anew, possibly by another worker) maps the same way:

- a name the API accepts is its own alias;
- another is spelled with ``.`` as ``__`` and every other refused character as ``_``,
  cut to 64; when that is taken (by a name the API accepts, or by an earlier alias, the
  names taken in sorted order) or was cut, it is the spelling cut to 55, ``_``, and the
  first 8 hex digits of the name's SHA-256.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ("API_TOOL_NAME", "ApiToolNames")

API_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
"""What the Messages API accepts as a tool name."""

_REFUSED = re.compile(r"[^a-zA-Z0-9_-]")


class ApiToolNames:
    """Our tool names and the API's, both ways, for one set of tools. Immutable."""

    def __init__(self, names: Iterable[str]) -> None:
        ours = sorted(set(names))
        accepted = [name for name in ours if API_TOOL_NAME.fullmatch(name)]
        taken = set(accepted)
        self._to_api = {name: name for name in accepted}
        for name in ours:
            if name in self._to_api:
                continue
            spelled = _REFUSED.sub("_", name.replace(".", "__"))
            alias = spelled
            if len(spelled) > 64 or not spelled or alias in taken:
                digest = hashlib.sha256(name.encode()).hexdigest()[:8]
                alias = f"{spelled[:55]}_{digest}"
            taken.add(alias)
            self._to_api[name] = alias
        self._from_api = {alias: name for name, alias in self._to_api.items()}

    @classmethod
    def of(cls, names: Iterable[str]) -> ApiToolNames:
        """The mapping of ``names`` (a request's tool names); pure."""
        return cls(names)

    def to_api(self, name: str) -> str:
        """The API's name of our tool ``name``; a name outside the set is returned as is
        (the API will refuse it, as it would have anyway)."""
        return self._to_api.get(name, name)

    def from_api(self, alias: str) -> str:
        """Our name of the API's ``alias``; an alias outside the set is returned as is (a
        tool the request did not offer: the gate refuses it by that name)."""
        return self._from_api.get(alias, alias)
