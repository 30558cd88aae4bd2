"""Named crash points, for proving durability from outside.

``WARDEN_CRASH_AT=<name>`` (or ``<name>:<n>``, the n-th pass) makes the process SIGKILL
itself when it passes that point: no cleanup, no flush, exactly like ``kill -9`` or a
power cut to the process. The points:

- ``tool_acted``: a tool acted, its outcome not yet recorded;
- ``intake_committed``: a run committed, its task message not yet acknowledged;
- ``intake_acked``: the task message acknowledged, the run's next publish not yet made;
- ``model_replied``: a model replied, its usage not yet recorded.

Unset (always, outside the chaos tests) a pass costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({"tool_acted", "intake_committed", "intake_acked", "model_replied"})

_armed: dict[str, int] = {}
_spec = os.environ.get("WARDEN_CRASH_AT", "")
if _spec:
    _name, _, _count = _spec.partition(":")
    if _name not in POINTS:
        raise ValueError(f"WARDEN_CRASH_AT names unknown crash point {_name!r}; known: "
                         f"{sorted(POINTS)}")
    _armed[_name] = int(_count or "1")


def crash_point(name: str) -> None:
    """SIGKILL this process if ``WARDEN_CRASH_AT`` armed ``name`` and its count is up."""
    if name in _armed:
        _armed[name] -= 1
        if _armed[name] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
