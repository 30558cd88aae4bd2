"""The provider's ``retry-after`` travels on the translated error, for the gate to honour."""

from __future__ import annotations

import email.utils
import time

import httpx2
import pytest
from anthropic._error_classes import make_status_error
from warden.actors.anthropic_model import translate_sdk_error


def rate_limited(headers: dict[str, str], status: int = 429) -> Exception:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    response = httpx2.Response(status, request=httpx2.Request("POST", "https://x/v1/messages"),
                               json=body, headers=headers)
    return make_status_error(f"Error code: {status}", body=body, response=response)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({}, None),
        ({"retry-after": "soon"}, None),
    ],
    ids=["seconds", "milliseconds", "milliseconds-win", "absent", "unreadable"],
)
def test_retry_after_of_a_rate_limit_is_read_from_the_headers(
    headers: dict[str, str], expected: float | None
) -> None:
    error = translate_sdk_error(rate_limited(headers), model="m")  # type: ignore[arg-type]

    assert error.retryable
    assert error.retry_after == expected


def test_retry_after_as_an_http_date_is_the_time_left_until_it() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)

    error = translate_sdk_error(rate_limited({"retry-after": when}), model="m")  # type: ignore[arg-type]

    assert error.retry_after is not None and 25 <= error.retry_after <= 31


def test_a_server_error_carries_its_retry_after_too() -> None:
    error = translate_sdk_error(rate_limited({"retry-after": "3"}, status=503), model="m")  # type: ignore[arg-type]

    assert error.retryable and error.retry_after == 3.0
