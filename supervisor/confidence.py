"""A worker's confidence in its answer, and whether a step must wait for a person.

The seed: "design your agent to know when it's uncertain". A step's answer may end with a
line ``Confidence: 0.6`` (or ``Confidence: 60%``), case-insensitive, on its last non-empty
line only (a number quoted earlier in the answer is not one). A role with
``confidence_threshold`` above 0 holds a step whose stated confidence is below it — when
the step used a tool of medium or high risk — for a person's decision before the answer is
accepted (``supervisor/run.py``, through the approvals of ``supervisor/approvals.py``).
An answer that states no confidence is taken as it is: the threshold asks the model to say
it, and the role's prompt should ask for the line.
"""

from __future__ import annotations

import re

__all__ = ("ACCEPT_STEP", "stated_confidence")

ACCEPT_STEP = "accept_step_answer"
"""The name an approval request to accept a step's answer goes by (its "tool"; its
arguments are the answer and the stated confidence)."""

_LINE = re.compile(
    r"^[\s*_>-]*confidence[\s*_]*[:=][\s*_]*(?P<value>\d{1,3}(?:\.\d+)?|\.\d+)\s*"
    r"(?P<percent>%?)[\s*_.]*$",
    re.IGNORECASE,
)


def stated_confidence(answer: str) -> float | None:
    """The confidence in [0, 1] the answer's last non-empty line states, or ``None`` when
    it states none (or one out of range); pure."""
    for line in reversed(answer.splitlines()):
        if line.strip():
            found = _LINE.match(line.strip())
            if found is None:
                return None
            value = float(found["value"])
            if found["percent"] or value > 1.0:
                value /= 100.0
            return value if 0.0 <= value <= 1.0 else None
    return None
