"""What counts as a stated confidence (``supervisor/confidence.py``), and a step whose
answer is not confident enough waiting for a person (``supervisor/run.py``, point 4 of
issue 10): whole runs on the in-memory dispatcher, decisions signed with real nkeys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from warden.bus.wire import SignedDecision
from warden.config import ConfigError
from warden.supervisor.approvals import ApprovalBoard
from warden.supervisor.confidence import ACCEPT_STEP, stated_confidence
from warden.supervisor.journal import ApprovalRecord, Journal

from tests.supervisor.run_fakes import Harness, plan_of, scripted, settings_for, text, use
from tests.supervisor.test_approvals import Note, Operator, approving, pending

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("answer", "expected"), [
    ("Done.\nConfidence: 0.6", 0.6),
    ("Done.\nconfidence: .25\n\n", 0.25),
    ("Done.\n**Confidence:** 40%", 0.4),
    ("Done.\nCONFIDENCE = 85", 0.85),
    ("Confidence: 1", 1.0),
    ("Confidence: 0%", 0.0),
])
def test_the_last_line_states_the_confidence(answer: str, expected: float) -> None:
    assert stated_confidence(answer) == pytest.approx(expected)


@pytest.mark.parametrize("answer", [
    "Done.",
    "",
    "Confidence: 0.3\nDone after all.",          # not the last line
    "My confidence: low",                          # not a number
    "Confidence: 150",                             # out of range
    "Confidence: 0.5 because the tests pass",      # more than the number
])
def test_an_answer_without_a_confidence_line_states_none(answer: str) -> None:
    assert stated_confidence(answer) is None


# -- a step that is not confident enough waits for a person (supervisor/run.py) ---------

UNSURE = "the refund is probably right\nConfidence: 0.3"


def unsure_run(tmp_path: Path, journal: Journal, answer: str = UNSURE, *, tool: str = "note",
               board: bool = True, threshold: float = 0.7) -> tuple[Harness, ApprovalBoard,
                                                                      Operator]:
    h, approvals, operator = approving(
        tmp_path, journal,
        scripted(plan_of(("research", "act")), {"research": [use(tool, text="x"), text(answer)]}),
        roles__research__auto_approve="medium",
        roles__research__confidence_threshold=threshold)
    h.approvals = approvals if board else None
    Note.runs = []
    return h, approvals, operator


async def run_deciding(h: Harness, board: ApprovalBoard, decide: Callable[[ApprovalRecord],
                       SignedDecision]) -> tuple[str, ApprovalRecord]:
    """Run ``h`` to its end, deciding the one request it makes with ``decide``."""
    ended: list[str] = []
    async with anyio.create_task_group() as tg:
        async def go() -> None:
            ended.append(await h.run())

        tg.start_soon(go)
        (request,) = await pending(h.journal)
        await h.journal.sync()
        assert await h.journal.run_status("r-1") == "awaiting_approval"
        assert (await board.apply(decide(request))).applied
    return ended[0], request


async def test_an_unsure_answer_after_a_risky_call_waits_for_a_person_who_accepts_it(
    tmp_path: Path, journal: Journal
) -> None:
    h, board, operator = unsure_run(tmp_path, journal)

    status, request = await run_deciding(h, board, operator.decide)

    assert status == "succeeded"
    assert (request.tool, request.arguments) == (ACCEPT_STEP,
                                                 {"answer": UNSURE, "confidence": 0.3})
    assert "confidence 0.3 is below the role's confidence_threshold = 0.7" in request.why
    assert "note (medium risk)" in request.why
    run = await journal.get_run("r-1")
    assert run is not None and run.steps[0].status == "succeeded"
    assert run.steps[0].output == UNSURE


async def test_an_unsure_answer_a_person_rejects_fails_the_step(
    tmp_path: Path, journal: Journal
) -> None:
    h, board, operator = unsure_run(tmp_path, journal)

    status, _ = await run_deciding(
        h, board, lambda r: operator.decide(r, "deny", reason="the amount is wrong"))

    assert status == "failed"
    run = await journal.get_run("r-1")
    assert run is not None and run.steps[0].status == "failed"
    assert "its answer was not accepted" in run.steps[0].output
    assert "the amount is wrong" in run.steps[0].output


@pytest.mark.parametrize(("answer", "tool"), [
    ("sure\nConfidence: 0.9", "note"),      # confident enough
    ("no confidence stated", "note"),       # says none
    (UNSURE, "echo"),                       # unsure, but used no risky tool
])
async def test_a_confident_or_harmless_step_is_accepted_without_asking(
    tmp_path: Path, journal: Journal, answer: str, tool: str
) -> None:
    h, _, _ = unsure_run(tmp_path, journal, answer, tool=tool)

    assert await h.run() == "succeeded"
    assert await journal.approvals(status=None) == []


async def test_an_unsure_step_with_no_one_to_ask_needs_a_human(
    tmp_path: Path, journal: Journal
) -> None:
    h, _, _ = unsure_run(tmp_path, journal, board=False)

    assert await h.run() == "needs_human"


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_a_threshold_outside_0_to_1_is_a_config_error_naming_the_key(
    tmp_path: Path, threshold: float
) -> None:
    with pytest.raises(ConfigError, match=r"'roles\.research\.confidence_threshold' = "
                                          r".*must be between 0 \(off\) and 1"):
        settings_for(tmp_path, roles__research__confidence_threshold=threshold)
