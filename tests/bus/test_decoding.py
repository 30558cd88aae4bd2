"""Decoding under limits: every problem is an ``InvalidMessage`` naming it, nothing raises."""

from __future__ import annotations

import msgspec
import pytest
from warden.bus.decoding import MAX_DEPTH, InvalidMessage, decode, depth_exceeds, field_of
from warden.bus.wire import (
    RunQuery,
    RunsQuery,
    TaskSubmission,
    ping_query_decoder,
    run_query_decoder,
    runs_query_decoder,
    strict_task_decoder,
    task_decoder,
)


def bomb(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000, 200_000])
def test_a_depth_bomb_is_refused_before_decoding(depth: int) -> None:
    # 10,000 deep raised RecursionError inside msgspec and crashed the API (issue 9).
    data = b'{"text": "a", "x": ' + bomb(depth) + b"}"
    problem = decode(task_decoder, data, max_bytes=10**6, what="submission")
    assert isinstance(problem, InvalidMessage)
    assert problem.field is None
    assert f"nests deeper than {MAX_DEPTH} levels" in problem.problem


def test_nesting_up_to_the_limit_is_fine_and_brackets_in_strings_do_not_count() -> None:
    assert not depth_exceeds(bomb(MAX_DEPTH), MAX_DEPTH)
    assert depth_exceeds(bomb(MAX_DEPTH + 1), MAX_DEPTH)
    text = b'{"text": "' + b"[" * 5000 + b'\\"' + b"{" * 5000 + b'"}'
    assert not depth_exceeds(text, MAX_DEPTH)
    assert isinstance(decode(task_decoder, text, max_bytes=10**6), TaskSubmission)


def test_size_is_checked_first() -> None:
    problem = decode(task_decoder, bomb(100_000), max_bytes=1000, what="submission")
    assert isinstance(problem, InvalidMessage)
    assert problem.problem == "submission is 200000 bytes, larger than the limit (1000)"


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        pytest.param(b'{"text": "\xff\xfe"}', None, "Invalid UTF-8", id="invalid-utf8"),
        pytest.param(b'{"text": "a", "budget_usd": 1e400}', "budget_usd", "out of range",
                     id="huge-float"),
        pytest.param(b'{"text": "a", "budget_usd": NaN}', None, "malformed", id="nan"),
        pytest.param(b'{"text": "a", "budget_usd": Infinity}', None, "malformed", id="inf"),
        pytest.param(b'{"text": "a", "v": 2}', "v", "version 2 is not supported", id="v2"),
        pytest.param(b'{"text": "a", "v": 99999999999999999999999}', "v", "not supported",
                     id="huge-v"),
        pytest.param(b'{"text": "a", "v": "1"}', "v", "Expected `int`", id="v-as-text"),
        pytest.param(b"\x00\x01", None, "malformed", id="binary"),
        pytest.param(b"", None, "truncated", id="empty"),
    ],
)
def test_each_problem_is_named(data: bytes, field: str | None, words: str) -> None:
    problem = decode(task_decoder, data, max_bytes=1000, what="submission")
    assert isinstance(problem, InvalidMessage), problem
    assert problem.field == field
    assert words in problem.problem


def test_a_task_ignores_unknown_fields_but_an_api_request_refuses_them() -> None:
    data = b'{"text": "a", "colour": "red"}'
    assert isinstance(decode(task_decoder, data, max_bytes=100), TaskSubmission)
    strict = decode(strict_task_decoder, data, max_bytes=100, what="submission")
    assert isinstance(strict, InvalidMessage)
    assert strict.field == "colour" and "unknown field" in strict.problem
    query = decode(run_query_decoder, b'{"run": "r-1"}', max_bytes=100, what="show request")
    assert isinstance(query, InvalidMessage) and query.field == "run"
    ping = decode(ping_query_decoder, b'{"x": 1}', max_bytes=100, what="ping request")
    assert isinstance(ping, InvalidMessage) and ping.field == "x"


@pytest.mark.parametrize(("limit", "ok"), [(1, True), (1000, True), (0, False), (1001, False),
                                           (10**30, False), (-5, False)])
def test_a_page_size_is_bounded(limit: int, ok: bool) -> None:
    data = msgspec.json.encode({"limit": limit})
    result = decode(runs_query_decoder, data, max_bytes=100)
    if ok:
        assert result == RunsQuery(limit=limit)
    else:
        assert isinstance(result, InvalidMessage) and result.field == "limit"


def test_a_good_request_decodes() -> None:
    assert decode(run_query_decoder, b'{"run_id": "r-1"}', max_bytes=100) == RunQuery(
        run_id="r-1")


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("Expected `str`, got `int` - at `$.text`", "text"),
        ("Expected `int` - at `$.steps[0]`", "steps"),
        ("Object missing required field `text`", "text"),
        ("Object contains unknown field `colour`", "colour"),
        ("JSON is malformed: invalid character (byte 0)", None),
    ],
)
def test_field_of_reads_msgspec_messages(message: str, field: str | None) -> None:
    assert field_of(message) == field
