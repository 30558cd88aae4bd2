"""The approval webhook sender against a real local HTTP server: the payload Slack and
others read, a signature a receiver can verify, retries (5xx, 429 with retry-after,
connection errors) and none after other answers, a notify that never waits, and a bounded
shutdown."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx2
import msgspec
import pytest
from structlog.testing import capture_logs
from warden.actors.retry_after import retry_after_s
from warden.config import WebhookSettings
from warden.supervisor import (
    ApprovalNotice,
    approval_notice,
    open_webhook_sender,
    verify_signature,
)
from warden.supervisor.webhook_payload import ARGUMENTS_SHOWN, encode_payload, slack_payload
from warden.supervisor.webhooks import retryable_error

from tests.supervisor.webhook_receiver import Answer, Receiver, open_receiver

pytestmark = pytest.mark.anyio

SECRET = "whsec-7f3a9c"
CREATED = datetime(2026, 12, 3, 15, 10, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with open_receiver() as running:
        yield running


def notice(approval_id: str = "ap-1", **arguments: object) -> ApprovalNotice:
    return approval_notice(
        approval_id=approval_id, run_id="r-12", step=2, role="research", tool="refund",
        arguments=arguments or {"order_id": "o-7", "amount": 80}, risk="high",
        why="high risk", hash="sha256:5e1f", created_at=CREATED,
        expires_at=CREATED + timedelta(minutes=30),
    )


def hook(url: str, **fields: object) -> WebhookSettings:
    # Backoffs of milliseconds: a test that waits on a retry waits on the receiver.
    base: dict[str, object] = {"url": url, "retry_base_s": 0.001, "retry_max_s": 0.005,
                               "timeout_s": 5}
    return msgspec.convert({**base, **fields}, WebhookSettings)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# -- the payload ----------------------------------------------------------------------------


async def test_the_body_is_slack_text_and_mrkdwn_blocks_with_the_notice_under_warden(
    receiver: Receiver,
) -> None:
    sent = notice()
    async with open_webhook_sender([hook(receiver.url())]) as sender:
        sender.notify(sent)
        (request,) = await receiver.wait_for(1)

    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert set(body) == {"text", "blocks", "warden"}
    assert "refund" in body["text"] and "warden approve ap-1" in body["text"]
    assert [block["type"] for block in body["blocks"]] == [
        "section", "section", "section", "context"]
    for block in body["blocks"][:3]:
        assert block["text"]["type"] == "mrkdwn"
    shown = "\n".join(block["text"]["text"] for block in body["blocks"][:3])
    assert '{"amount":80,"order_id":"o-7"}' in shown  # canonical: keys sorted, no spaces
    assert "warden approve ap-1" in shown and "warden deny ap-1 --reason" in shown
    assert "high risk" in shown and "r-12" in shown
    assert body["blocks"][3]["elements"][0]["type"] == "mrkdwn"
    assert body["warden"]["event"] == "approval_requested"
    assert msgspec.convert(body["warden"], ApprovalNotice, strict=False) == sent
    assert body["warden"]["expires_at"] == "2026-12-03T15:40:00Z"


def test_unix_times_become_utc_datetimes_and_an_unknown_role_is_left_out() -> None:
    sent = approval_notice(
        approval_id="ap-9", run_id="r-1", step=0, tool="refund", arguments={}, risk="medium",
        why="risk medium", hash="h", created_at=1_780_000_000.0, expires_at=1_780_003_600.0)

    assert sent.created_at == datetime(2026, 5, 28, 20, 26, 40, tzinfo=UTC)
    assert sent.expires_at - sent.created_at == timedelta(hours=1)
    head = slack_payload(sent)["blocks"][0]["text"]["text"]  # type: ignore[index]
    assert "role" not in head and "step 0" in head


def test_what_a_model_chose_cannot_mention_link_or_break_out_of_its_code_block() -> None:
    injected = notice(command="<!channel> ``` <https://evil.example|click> `x`")
    body = json.loads(msgspec.json.encode(slack_payload(injected)))

    shown = json.dumps(body["blocks"]) + body["text"]
    assert "<!channel>" not in shown and "<https://evil" not in shown
    assert "&lt;!channel&gt;" in shown
    arguments = body["blocks"][1]["text"]["text"]
    assert arguments.count("```") == 2  # the fence's own two, nothing inside
    assert "<!channel>" in body["warden"]["arguments"]  # the structured notice: unescaped


def test_long_arguments_are_cut_for_display_and_their_size_kept() -> None:
    long = notice(content="<" * 20_000)

    assert len(long.arguments) == ARGUMENTS_SHOWN and long.arguments.endswith("…")
    assert long.arguments_bytes == len('{"content":""}') + 20_000
    for block in slack_payload(long)["blocks"]:  # type: ignore[attr-defined]
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000  # Slack's limit for a section


# -- the signature --------------------------------------------------------------------------


async def test_a_secret_signs_timestamp_and_body_and_a_receiver_can_verify_it(
    receiver: Receiver,
) -> None:
    webhook = hook(receiver.url(), secret_env="HOOK_SECRET")
    async with open_webhook_sender([webhook], environ={"HOOK_SECRET": SECRET},
                                   wall_clock=lambda: 1_780_000_000.0) as sender:
        sender.notify(notice())
        (request,) = await receiver.wait_for(1)

    timestamp = request.headers["x-warden-timestamp"]
    signature = request.headers["x-warden-signature"]
    assert timestamp == "1780000000"
    # What a receiver computes, as the README says: HMAC-SHA256 of timestamp "." body.
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body,
                        hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    assert verify_signature(SECRET.encode(), timestamp=timestamp, body=request.body,
                            signature=signature, now=1_780_000_010.0)
    assert not verify_signature(SECRET.encode(), timestamp=timestamp,
                                body=request.body + b" ", signature=signature,
                                now=1_780_000_010.0)
    assert not verify_signature(b"other", timestamp=timestamp, body=request.body,
                                signature=signature, now=1_780_000_010.0)
    assert not verify_signature(SECRET.encode(), timestamp=timestamp, body=request.body,
                                signature=signature, now=1_780_000_000.0 + 301)  # replayed
    assert SECRET not in request.body.decode()


async def test_without_a_secret_nothing_is_signed(receiver: Receiver) -> None:
    async with open_webhook_sender([hook(receiver.url())]) as sender:
        sender.notify(notice())
        (request,) = await receiver.wait_for(1)

    assert "x-warden-signature" not in request.headers
    assert len(request.headers["x-warden-delivery"]) == 32


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_is_retried_and_the_notice_delivered_exactly_once(
    receiver: Receiver, status: int,
) -> None:
    receiver.answer("/hook", Answer(status))
    async with open_webhook_sender([hook(receiver.url())]) as sender:
        sender.notify(notice())
        first, second = await receiver.wait_for(2)

    assert (first.answered, second.answered) == (status, 200)
    assert len(receiver.to("/hook")) == 2  # nothing after the 200
    assert first.headers["x-warden-delivery"] == second.headers["x-warden-delivery"]
    stats = sender.statistics()
    assert (stats.delivered, stats.failed, stats.retries) == (1, 0, 1)


async def test_an_attempt_without_an_answer_times_out_and_is_retried(receiver: Receiver) -> None:
    receiver.answer("/hook", Answer(hang=True))
    with capture_logs() as logs:
        async with open_webhook_sender([hook(receiver.url(), timeout_s=1)]) as sender:
            sender.notify(notice())
            first, second = await receiver.wait_for(2)

    assert (first.answered, second.answered) == (None, 200)
    (retry,) = events(logs, "webhook_retry")
    assert retry["error"] in ("no answer within 1 s", "ReadTimeout: timed out")
    assert sender.statistics().delivered == 1


async def test_a_receiver_that_hangs_up_without_answering_is_retried(receiver: Receiver) -> None:
    receiver.answer("/hook", Answer(drop=True))
    with capture_logs() as logs:
        async with open_webhook_sender([hook(receiver.url())]) as sender:
            sender.notify(notice())
            first, second = await receiver.wait_for(2)

    assert (first.answered, second.answered) == (None, 200)
    (retry,) = events(logs, "webhook_retry")
    assert retry["error"].startswith("RemoteProtocolError")


@pytest.mark.parametrize(("error", "retried"), [
    (httpx2.ConnectError("refused"), True),
    (httpx2.ReadTimeout("slow"), True),
    (httpx2.RemoteProtocolError("hung up"), True),
    (httpx2.ProxyError("proxy down"), True),
    (TimeoutError(), True),
    (httpx2.UnsupportedProtocol("gopher"), False),
    (httpx2.LocalProtocolError("bad header"), False),
    (httpx2.TooManyRedirects("loop"), False),
    (httpx2.InvalidURL("bad"), False),
    (ValueError("a bug of ours"), False),
])
def test_only_errors_another_attempt_may_repair_are_retried(
    error: Exception, retried: bool,
) -> None:
    assert retryable_error(error) is retried


async def test_each_attempt_is_signed_afresh_so_a_late_retry_still_verifies(
    receiver: Receiver,
) -> None:
    receiver.answer("/hook", Answer(503))
    # The wall clock moves 15 minutes with each request the receiver has had.
    async with open_webhook_sender(
            [hook(receiver.url(), secret_env="HOOK_SECRET")], environ={"HOOK_SECRET": SECRET},
            wall_clock=lambda: 1_780_000_000.0 + 900 * len(receiver.requests)) as sender:
        sender.notify(notice())
        first, second = await receiver.wait_for(2)

    assert first.headers["x-warden-timestamp"] == "1780000000"
    assert second.headers["x-warden-timestamp"] == "1780000900"  # 15 min later: re-signed
    assert verify_signature(SECRET.encode(), timestamp="1780000900", body=second.body,
                            signature=second.headers["x-warden-signature"],
                            now=1_780_000_905.0)


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 410, 422])
async def test_another_answer_is_final_and_never_retried(
    receiver: Receiver, status: int,
) -> None:
    receiver.answer("/hook", Answer(status, {"location": "http://127.0.0.1:1/elsewhere"}))
    with capture_logs() as logs:
        async with open_webhook_sender([hook(receiver.url(), attempts=5)]) as sender:
            sender.notify(notice())
            await receiver.wait_for(1)

    # The sender's exit waits for every delivery: had it retried, the request would be here.
    assert [r.answered for r in receiver.requests] == [status]
    (rejected,) = events(logs, "webhook_rejected")
    assert rejected["status"] == status and rejected["approval_id"] == "ap-1"
    assert (sender.statistics().failed, sender.statistics().retries) == (1, 0)


async def test_a_429_waits_its_retry_after(receiver: Receiver) -> None:
    receiver.answer("/hook", Answer(429, {"retry-after": "1"}))
    with capture_logs() as logs:
        async with open_webhook_sender([hook(receiver.url())]) as sender:
            sender.notify(notice())
            first, second = await receiver.wait_for(2)

    # The backoff alone would be under 5 ms: the gap is the server's one second.
    assert second.at - first.at >= 0.95
    assert second.answered == 200
    (retry,) = events(logs, "webhook_retry")
    assert retry["wait_s"] == 1.0 and retry["error"] == "HTTP 429"


async def test_a_429_retry_after_is_capped(receiver: Receiver) -> None:
    receiver.answer("/hook", Answer(429, {"retry-after": "3600"}))
    with capture_logs() as logs:
        async with open_webhook_sender(
                [hook(receiver.url(), retry_after_cap_s=0.05)]) as sender:
            sender.notify(notice())
            await receiver.wait_for(2)

    (retry,) = events(logs, "webhook_retry")
    assert retry["wait_s"] == 0.05


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 3, 15, 0, tzinfo=UTC).timestamp()
    assert retry_after_s("7", now) == 7.0
    assert retry_after_s("Thu, 03 Dec 2026 15:00:30 GMT", now) == 30.0
    assert retry_after_s("Thu, 03 Dec 2026 14:00:00 GMT", now) == 0.0  # past: no wait
    assert retry_after_s("soon", now) is None
    assert retry_after_s("nan", now) is None
    assert retry_after_s(None, now) is None


def _refused_url() -> str:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook?token=q-s3cret"


async def test_an_unreachable_webhook_is_retried_then_given_up_and_logged_without_secrets(
) -> None:
    url = _refused_url()
    with capture_logs() as logs:
        async with open_webhook_sender([hook(url, attempts=3, secret_env="HOOK_SECRET")],
                                       environ={"HOOK_SECRET": SECRET}) as sender:
            sender.notify(notice())

    assert [e["attempt"] for e in events(logs, "webhook_retry")] == [1, 2]
    (failed,) = events(logs, "webhook_failed")
    assert failed["attempts"] == 3 and failed["approval_id"] == "ap-1"
    assert failed["run_id"] == "r-12"  # said, not bound: the task is not the run's
    assert failed["url"] == url.split("?")[0]
    assert "ConnectError" in failed["error"]
    everything = repr(logs)
    assert "q-s3cret" not in everything and SECRET not in everything
    assert (sender.statistics().failed, sender.statistics().delivered) == (1, 0)


async def test_a_url_from_the_environment_is_logged_as_its_origin_only() -> None:
    refused = _refused_url().split("?")[0]  # http://127.0.0.1:<port>/hook
    origin = refused.rsplit("/", 1)[0]
    webhook = msgspec.convert({"url_env": "SLACK_URL", "attempts": 1}, WebhookSettings)
    with capture_logs() as logs:
        async with open_webhook_sender(
                [webhook], environ={"SLACK_URL": f"{origin}/services/T1/B2/xoxtoken"}) as sender:
            sender.notify(notice())

    (failed,) = events(logs, "webhook_failed")
    assert failed["url"] == f"{origin}/… ($SLACK_URL)"
    assert "xoxtoken" not in repr(logs)


# -- never blocking, bounded --------------------------------------------------------------


async def test_notify_returns_at_once_while_a_webhook_hangs_and_the_others_are_served(
    receiver: Receiver,
) -> None:
    receiver.answer("/down", *[Answer(hang=True)] * 3)
    webhooks = [hook(receiver.url("/down"), timeout_s=60), hook(receiver.url("/up"))]
    async with open_webhook_sender(webhooks, shutdown_timeout_s=0.1) as sender:
        with anyio.fail_after(10):
            for index in range(3):
                sender.notify(notice(f"ap-{index}"))  # not awaited: it cannot wait
            assert sender.statistics().queued == 6
            await receiver.wait_for(3, "/down")  # all three held by the hanging webhook
            served = await receiver.wait_for(3, "/up")

    assert sorted(json.loads(r.body)["warden"]["approval_id"] for r in served) == [
        "ap-0", "ap-1", "ap-2"]
    assert sender.statistics().delivered == 3


async def test_a_full_queue_is_logged_and_counted_not_silently_dropped(
    receiver: Receiver,
) -> None:
    with capture_logs() as logs:
        async with open_webhook_sender([hook(receiver.url())], queue_size=1) as sender:
            sender.notify(notice("ap-1"))
            sender.notify(notice("ap-2"))  # the serving task has not run yet: full
            await receiver.wait_for(1)

    (full,) = events(logs, "webhook_queue_full")
    assert full["approval_id"] == "ap-2" and full["log_level"] == "warning"
    assert [json.loads(r.body)["warden"]["approval_id"] for r in receiver.requests] == ["ap-1"]
    assert (sender.statistics().dropped, sender.statistics().delivered) == (1, 1)


async def test_shutdown_delivers_what_is_queued(receiver: Receiver) -> None:
    async with open_webhook_sender([hook(receiver.url())], max_in_flight=2) as sender:
        for index in range(6):
            sender.notify(notice(f"ap-{index}"))
    # Out of the block: the exit waited for them.

    assert len(receiver.requests) == 6
    assert sender.statistics().delivered == 6


async def test_shutdown_is_bounded_when_a_webhook_never_answers(receiver: Receiver) -> None:
    receiver.answer("/hook", Answer(hang=True), Answer(hang=True))
    with capture_logs() as logs, anyio.fail_after(10):
        async with open_webhook_sender([hook(receiver.url(), timeout_s=60)],
                                       shutdown_timeout_s=0.2) as sender:
            sender.notify(notice())
            sender.notify(notice("ap-2"))
            await receiver.wait_for(2)
            leaving = anyio.current_time()
        left = anyio.current_time() - leaving

    assert 0.2 <= left < 5
    (undelivered,) = events(logs, "webhook_undelivered")
    assert undelivered["approval_ids"] == ["ap-1", "ap-2"]
    assert sender.statistics().abandoned == 2
    sender.notify(notice("ap-3"))  # after the exit: logged, counted, never raised
    assert sender.statistics().dropped == 1


async def test_a_cancelled_owner_still_gets_the_bounded_drain(receiver: Receiver) -> None:
    with anyio.CancelScope() as scope:
        async with open_webhook_sender([hook(receiver.url())]) as sender:
            sender.notify(notice())
            scope.cancel()
            await anyio.sleep_forever()

    assert len(receiver.requests) == 1 and sender.statistics().delivered == 1


async def test_no_webhooks_means_notify_does_nothing() -> None:
    async with open_webhook_sender([]) as sender:
        sender.notify(notice())
    assert sender.statistics().queued == 0


# -- the README's example and snippet -------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_blocks(language: str) -> list[str]:
    section = README.read_text(encoding="utf-8").split("### Approval webhooks", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)\n```\n", section, re.DOTALL)


def test_the_readme_payload_example_is_what_is_sent() -> None:
    (example,) = _readme_blocks("json")
    sent = approval_notice(
        approval_id="ap-3f9c", run_id="r-12", step=2, role="research", tool="refund",
        arguments={"order_id": "o-7", "amount": 80}, risk="high", why="high risk",
        hash="9b1e…c4", created_at=CREATED, expires_at=CREATED + timedelta(minutes=30),
    )

    assert json.loads(example) == json.loads(encode_payload(sent))


async def test_the_readme_verification_snippet_accepts_a_signed_request_and_no_other(
    receiver: Receiver,
) -> None:
    (snippet,) = _readme_blocks("python")
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    webhook = hook(receiver.url(), secret_env="HOOK_SECRET")
    async with open_webhook_sender([webhook], environ={"HOOK_SECRET": SECRET}) as sender:
        sender.notify(notice())
        (request,) = await receiver.wait_for(1)
    headers = {"X-Warden-Timestamp": request.headers["x-warden-timestamp"],
               "X-Warden-Signature": request.headers["x-warden-signature"]}

    assert namespace["verify"](SECRET.encode(), headers, request.body)
    assert not namespace["verify"](b"wrong", headers, request.body)
    assert not namespace["verify"](SECRET.encode(), headers, request.body.replace(b"80", b"90"))
