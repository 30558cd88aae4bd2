"""Submission checks: every problem is named by its field, nothing raises."""

from __future__ import annotations

import pytest
from warden.bus.wire import TaskSubmission
from warden.supervisor.intake import Rejection, check_submission


def test_a_plain_text_object_is_a_task_and_gets_the_fallback_id() -> None:
    checked = check_submission(b'{"text": "hi"}', max_bytes=100, fallback_id="t-7")
    assert checked == ("t-7", TaskSubmission(text="hi"))


def test_the_submission_id_becomes_the_run_id() -> None:
    checked = check_submission(b'{"id": "mine", "text": "hi"}', max_bytes=100, fallback_id="t")
    assert isinstance(checked, tuple) and checked[0] == "mine"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"text": 1}', "text"),
        (b'{}', "text"),
        (b'{"text": "a", "scenario": 3}', "scenario"),
        (b'{"text": "a", "id": "has space"}', "id"),
        (b'{"text": ""}', "text"),
        (b'{"text": "a", "budget_usd": 0}', "budget_usd"),
        (b'{"type": "something.else", "text": "a"}', "type"),
    ],
)
def test_problems_name_their_field(data: bytes, field: str) -> None:
    checked = check_submission(data, max_bytes=1000, fallback_id="t-1")
    assert isinstance(checked, Rejection)
    assert checked.field == field
    assert f"field {field!r}" in checked.error


def test_size_is_checked_before_decoding() -> None:
    checked = check_submission(b"x" * 101, max_bytes=100, fallback_id="t-1")
    assert isinstance(checked, Rejection)
    assert "101 bytes, larger than limits.max_task_bytes (100)" in checked.error
