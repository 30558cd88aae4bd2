"""What counts as a stated confidence (``supervisor/confidence.py``)."""

from __future__ import annotations

import pytest
from warden.supervisor.confidence import stated_confidence


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
