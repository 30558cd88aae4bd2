"""A recorded run, and how two recordings of one run differ (issue 11, point 4: replay and
eval).

A ``Recording`` is everything the journal holds of one run that decides what it does:
its task, every model call (the request as journalled, and the reply), every tool call
(arguments, outcome, and so the policy decision: a refused call's output says by whom),
its approval requests with their decisions, a dry run's intercepted calls, its steps, and
its end (status, result, error, plan). ``journal_recording.read_recording`` reads one
from a journal file; ``replay.py`` re-runs it and reads the replay's own recording back;
``divergences`` compares the two. A scenario file of ``warden eval`` holds one
(``eval.py``). Encoded as JSON it is stable: new fields get defaults and go last.

Every call is identified by its idempotency key (``<run>/e<epoch>/plan/a<attempt>``,
``.../s<step>/a<attempt>/t<turn>``, its tool calls ``.../c<call>``, a step answer's
acceptance ``.../accept``, ``.../synth``), the same in the recorded run and its replay:
``position`` orders them as the run made them, so the first divergence is the earliest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

__all__ = (
    "Divergence",
    "RecordedApproval",
    "RecordedIntercept",
    "RecordedModelCall",
    "RecordedRun",
    "RecordedStep",
    "RecordedToolCall",
    "Recording",
    "decision_of",
    "divergences",
    "location",
    "position",
)

FORMAT = 1
"""The version of the recording format (``Recording.format``)."""


class RecordedRun(msgspec.Struct, frozen=True, kw_only=True):
    """The run itself: what was asked and how it ended."""

    id: str
    text: str
    status: str
    scenario: str | None = None
    budget_usd: float | None = None
    dry_run: bool = False
    epoch: int = 0
    result: str | None = None
    error: str | None = None
    plan: str | None = None


class RecordedStep(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    role: str
    instruction: str
    status: str
    output: str = ""


class RecordedModelCall(msgspec.Struct, frozen=True, kw_only=True):
    """One model call: ``request`` as the gate journals it (``model``, ``role``,
    ``max_tokens``, ``since``, the ``messages`` new since the attempt's previous call,
    and ``system`` and ``tools`` on an attempt's first call); ``response`` its content
    blocks."""

    key: str
    purpose: str
    model: str
    request: dict[str, Any]
    response: list[Any]
    step: int | None = None
    turn: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0


class RecordedToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call; ``ok`` is ``None`` for an intent that has no outcome."""

    key: str
    step: int
    tool: str
    arguments: dict[str, Any]
    ok: bool | None
    output: str = ""
    duration_ms: float = 0.0


class RecordedApproval(msgspec.Struct, frozen=True, kw_only=True):
    """One approval request and its decision (``approvals.py``)."""

    id: str
    call_key: str
    step: int
    tool: str
    arguments: dict[str, Any]
    risk: str
    why: str
    hash: str
    status: str
    decided_by: str | None = None
    reason: str | None = None


class RecordedIntercept(msgspec.Struct, frozen=True, kw_only=True):
    """What a dry run recorded of one tool call (``dry_run.py``)."""

    key: str
    tool: str
    decision: str
    by: str
    reason: str = ""


class Recording(msgspec.Struct, frozen=True, kw_only=True):
    """One run as the journal has it (module docstring)."""

    run: RecordedRun
    steps: list[RecordedStep] = []
    model_calls: list[RecordedModelCall] = []
    tool_calls: list[RecordedToolCall] = []
    approvals: list[RecordedApproval] = []
    intercepted: list[RecordedIntercept] = []
    format: int = FORMAT


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    """One way the replay differs from the recording: ``where`` in the run (``step 0
    turn 1 call 0``, ``plan``, ``run``), ``what`` differs, as recorded and as replayed."""

    where: str
    what: str
    recorded: str
    replayed: str
    at: tuple[int, ...] = ()
    """``position`` of the call (the run's own fields come last)."""

    def describe(self) -> str:
        return f"{self.where}: {self.what}: recorded {self.recorded}; replayed {self.replayed}"


# -- where a call is -------------------------------------------------------------------

_LAST = (9, 0)


def position(key: str) -> tuple[int, ...]:
    """Where call ``key`` comes in its run: plan attempts, then steps (attempt, turn,
    call; the acceptance of an answer after its turns), then the synthesis."""
    parts = key.split("/")[2:]  # <run>/e<epoch>/...
    if not parts:
        return _LAST
    if parts[0] == "plan":
        return (0, _number(parts[1]) if len(parts) > 1 else 0)
    if parts[0] == "synth":
        return (2,)
    numbers = [1]
    for part in parts:
        numbers.append(10**6 if part == "accept" else _number(part))
    return tuple(numbers)


def location(key: str) -> str:
    """``key`` for a person: ``plan attempt 0``, ``step 1 attempt 0 turn 2 call 0``,
    ``synthesis``."""
    parts = key.split("/")[2:]
    if not parts:
        return key
    if parts[0] == "plan":
        return "plan" + (f" attempt {_number(parts[1])}" if len(parts) > 1 else "")
    if parts[0] == "synth":
        return "synthesis"
    names = {"s": "step", "a": "attempt", "t": "turn", "c": "call"}
    words = [("accepting the answer" if part == "accept"
              else f"{names.get(part[:1], part[:1])} {part[1:]}") for part in parts]
    return " ".join(words)


def _number(part: str) -> int:
    digits = part[1:]
    return int(digits) if digits.isdigit() else 0


# -- decisions ---------------------------------------------------------------------------

def decision_of(call: RecordedToolCall) -> str:
    """What was decided for a tool call, as a person reads it: ``allowed``, ``refused by
    <guard>`` (or ``refused: not in the allowlist`` ...), ``failed`` (allowed, and the
    tool failed), ``no outcome`` (an intent only)."""
    if call.ok is None:
        return "no outcome"
    if call.ok:
        return "allowed"
    output = call.output
    if output.startswith("denied by "):
        return "refused by " + output[len("denied by "):].split(":", 1)[0]
    if output.startswith("unknown tool"):
        return "refused: unknown tool"
    if "is not in the allowlist" in output and output.endswith("not called"):
        return "refused: not in the role's allowlist"
    if output.startswith("dry run:"):
        return "refused: dry run"
    return "failed"


# -- the comparison ----------------------------------------------------------------------

_REQUEST_FIELDS = ("model", "role", "system", "tools", "max_tokens", "since", "messages")


def divergences(recorded: Recording, replayed: Recording) -> list[Divergence]:
    """Every way ``replayed`` differs from ``recorded``, earliest first (``position``);
    the run's own fields (plan, steps, status, result) after the calls. Pure."""
    found: list[Divergence] = []
    found += _model_calls(recorded.model_calls, replayed.model_calls)
    found += _approvals(recorded.approvals, replayed.approvals)  # before the decision
    found += _tool_calls(recorded.tool_calls, replayed.tool_calls)
    found += _intercepted(recorded.intercepted, replayed.intercepted)
    found += _steps(recorded.steps, replayed.steps)
    found += _run(recorded.run, replayed.run)
    return sorted(found, key=lambda d: d.at)


def _by_key(items: Iterable[Any], attribute: str = "key") -> dict[str, Any]:
    return {getattr(item, attribute): item for item in items}


def _missing(key: str, kind: str, recorded: object, replayed: object) -> Divergence:
    return Divergence(where=location(key), what=kind, recorded=str(recorded),
                      replayed=str(replayed), at=position(key))


def _model_calls(recorded: list[RecordedModelCall], replayed: list[RecordedModelCall]
                 ) -> list[Divergence]:
    found: list[Divergence] = []
    then, now = _by_key(recorded), _by_key(replayed)
    for key, call in then.items():
        again = now.get(key)
        if again is None:
            found.append(_missing(key, f"{call.purpose} model call", "made",
                                  "not made"))
            continue
        for name in _REQUEST_FIELDS:
            was, is_ = call.request.get(name), again.request.get(name)
            if was != is_:
                before, after = _contrast(was, is_)
                found.append(Divergence(
                    where=location(key),
                    what=f"{call.purpose} request ({call.request.get('role')}) differs in "
                         f"{name!r}",
                    recorded=before, replayed=after, at=position(key)))
                break
    for key, call in now.items():
        if key not in then:
            found.append(_missing(key, f"{call.purpose} model call", "not made",
                                  "made (no reply was recorded for it)"))
    return found


def _tool_calls(recorded: list[RecordedToolCall], replayed: list[RecordedToolCall]
                ) -> list[Divergence]:
    found: list[Divergence] = []
    then, now = _by_key(recorded), _by_key(replayed)
    for key, call in then.items():
        again = now.get(key)
        if again is None:
            found.append(_missing(key, f"tool call {call.tool!r}", decision_of(call),
                                  "not made"))
            continue
        if (call.tool, call.arguments) != (again.tool, again.arguments):
            found.append(_missing(key, "tool call", _short([call.tool, call.arguments]),
                                  _short([again.tool, again.arguments])))
        elif decision_of(call) != decision_of(again):
            found.append(_missing(key, f"decision on {call.tool!r}",
                                  decision_of(call), f"{decision_of(again)} "
                                  f"({_short(again.output)})"))
        elif call.output != again.output:
            found.append(_missing(key, f"output of {call.tool!r}",
                                  *_contrast(call.output, again.output)))
    for key, call in now.items():
        if key not in then:
            found.append(_missing(key, f"tool call {call.tool!r}", "not made",
                                  decision_of(call)))
    return found


def _approvals(recorded: list[RecordedApproval], replayed: list[RecordedApproval]
               ) -> list[Divergence]:
    found: list[Divergence] = []
    then, now = _by_key(recorded, "call_key"), _by_key(replayed, "call_key")
    for key, request in then.items():
        again = now.get(key)
        if again is None:
            found.append(_missing(key, f"approval of {request.tool!r}",
                                  f"asked ({request.why}), {request.status}",
                                  "not asked (no longer needs one)"))
        elif again.status != request.status:
            found.append(_missing(key, f"approval of {request.tool!r}", request.status,
                                  again.status))
    for key, request in now.items():
        if key not in then:
            found.append(_missing(key, f"approval of {request.tool!r}", "not asked",
                                  f"asked ({request.why}); no decision was recorded"))
    return found


def _intercepted(recorded: list[RecordedIntercept], replayed: list[RecordedIntercept]
                 ) -> list[Divergence]:
    found: list[Divergence] = []
    then, now = _by_key(recorded), _by_key(replayed)
    for key in sorted(then.keys() | now.keys(), key=position):
        was, is_ = then.get(key), now.get(key)
        label = lambda c: "none" if c is None else f"{c.decision} by {c.by}"  # noqa: E731
        if label(was) != label(is_):
            tool = (was or is_).tool  # type: ignore[union-attr]
            found.append(_missing(key, f"dry run's record of {tool!r}", label(was),
                                  label(is_)))
    return found


def _steps(recorded: list[RecordedStep], replayed: list[RecordedStep]) -> list[Divergence]:
    found: list[Divergence] = []
    then = {s.index: s for s in recorded}
    now = {s.index: s for s in replayed}
    for index in sorted(then.keys() | now.keys()):
        was, is_ = then.get(index), now.get(index)
        at = (1, index, 10**7)
        if was is None or is_ is None:
            found.append(Divergence(where=f"step {index}", what="step",
                                    recorded="absent" if was is None else was.status,
                                    replayed="absent" if is_ is None else is_.status, at=at))
        elif (was.role, was.instruction) != (is_.role, is_.instruction):
            found.append(Divergence(where=f"step {index}", what="plan step",
                                    recorded=_short([was.role, was.instruction]),
                                    replayed=_short([is_.role, is_.instruction]), at=at))
        elif was.status != is_.status:
            found.append(Divergence(where=f"step {index}", what="step status",
                                    recorded=was.status, replayed=is_.status, at=at))
        elif was.output != is_.output:
            before, after = _contrast(was.output, is_.output)
            found.append(Divergence(where=f"step {index}", what="step output",
                                    recorded=before, replayed=after, at=at))
    return found


def _run(recorded: RecordedRun, replayed: RecordedRun) -> list[Divergence]:
    found: list[Divergence] = []
    for name, at in (("plan", (0, 10**6)), ("status", _LAST), ("result", _LAST),
                     ("error", _LAST)):
        was, is_ = getattr(recorded, name), getattr(replayed, name)
        if was != is_:
            before, after = _contrast(was, is_)
            found.append(Divergence(where="run", what=name, recorded=before,
                                    replayed=after, at=at))
    return found


def _short(value: object, limit: int = 160) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _contrast(was: object, is_: object, *, context: int = 40) -> tuple[str, str]:
    """``was`` and ``is_`` shortened around where they first differ (a long prompt that
    differs near its end shows the difference, not the same beginning twice)."""
    texts = [v if isinstance(v, str) else msgspec.json.encode(v).decode() for v in (was, is_)]
    same = 0
    for a, b in zip(*texts, strict=False):
        if a != b:
            break
        same += 1
    start = max(0, same - context)
    if start == 0:
        return _short(was), _short(is_)
    return tuple("..." + _short(text[start:]) for text in texts)  # type: ignore[return-value]
