"""Identities and least privilege on a real, authenticated embedded server.

Every daemon here starts its server through ``open_daemon`` (generated seeds, the rendered
``authorization`` block), and every connection uses the documented credentials: the seed
files ``daemon.json`` names, through ``Daemon.credentials``. A refusal is the server's:
seen by the connection's error callback (``bus_error`` with the server's "permissions
violation"), and, where a subscriber of the daemon identity can listen, as nothing
arriving before a later sentinel on the same subject.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from structlog.testing import capture_logs
from warden.bus import subjects
from warden.bus.connection import Bus, open_bus
from warden.bus.credentials import Credentials
from warden.bus.embedded import CONFIG_FILE, LOG_FILE
from warden.bus.errors import BusConnectionError, BusTimeoutError, NoRespondersError
from warden.bus.identities import IDENTITIES, Identity, ensure_seeds
from warden.bus.wire import DeadLetterList, RunList, RunsQuery, encoder, reply_decoder
from warden.supervisor.daemon import CREDENTIALS_DIR, DAEMON_FILE, Daemon, open_daemon

from tests.integration.harness import make_settings, run_task

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

Outcome = Literal["delivered", "refused", "inconsistent"]
Logs = list[MutableMapping[str, Any]]
_DEADLINE = 5.0


# -- helpers ------------------------------------------------------------------------------


@asynccontextmanager
async def _daemon(tmp_path: Path, **overrides: object) -> AsyncIterator[Daemon]:
    async with open_daemon(make_settings(tmp_path, **overrides)) as daemon:
        yield daemon


@asynccontextmanager
async def _connections(daemon: Daemon) -> AsyncIterator[dict[Identity, Bus]]:
    """One connection per identity, each with the credentials a client of ``daemon`` is
    told to use."""
    async with AsyncExitStack() as stack:
        yield {
            identity: await stack.enter_async_context(
                open_bus(daemon.bus.url, name=f"test-{identity}",
                         credentials=daemon.credentials(identity)))
            for identity in IDENTITIES
        }


def _violated(logs: Logs, action: Literal["publish", "subscription"], subject: str) -> bool:
    # nats-py lower-cases the server's -ERR line: 'permissions violation for publish to "x"'.
    wanted = f'permissions violation for {action} to "{subject.lower()}"'
    return any(e.get("event") == "bus_error" and wanted in str(e.get("error", "")).lower()
               for e in logs)


async def _await_violation(
    logs: Logs, action: Literal["publish", "subscription"], subject: str
) -> None:
    """Until the server's refusal of ``action`` on ``subject`` reached an error callback;
    ``TimeoutError`` after ``_DEADLINE`` seconds."""
    with anyio.fail_after(_DEADLINE):
        # The refusal comes in as a log event from nats-py's error callback, which sets no
        # event we could await: poll it, with a deadline.
        while not _violated(logs, action, subject):  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def _publish_outcome(sender: Bus, watcher: Bus, subject: str, logs: Logs) -> Outcome:
    """Publish a token from ``sender`` on ``subject``, which ``watcher`` (the daemon
    identity) listens to: ``delivered`` if it arrives, ``refused`` if the server refused
    it (the violation reached ``sender``'s error callback, and a sentinel published after
    it by ``watcher`` arrives with no token before it)."""
    token = secrets.token_hex(6).encode()
    async with watcher.subscribe(subject) as seen:
        ready = b"ready-" + token
        await watcher.publish(subject, ready)  # the watcher's interest is registered
        with anyio.fail_after(_DEADLINE):
            while (await seen.__anext__()).data != ready:
                pass
        await sender.publish(subject, token)
        arrived = False
        with anyio.move_on_after(_DEADLINE):
            while not _violated(logs, "publish", subject):
                with anyio.move_on_after(0.02):
                    if (await seen.__anext__()).data == token:
                        arrived = True
                        break
        if arrived:
            return "inconsistent" if _violated(logs, "publish", subject) else "delivered"
        if not _violated(logs, "publish", subject):
            return "inconsistent"  # neither arrived nor refused within the deadline
        end = b"end-" + token
        await watcher.publish(subject, end)
        with anyio.fail_after(_DEADLINE):
            while (data := (await seen.__anext__()).data) != end:
                if data == token:
                    return "inconsistent"
        return "refused"


async def _subscribe_outcome(
    subscriber: Bus, publisher: Bus, subject: str, logs: Logs, *, queue: str | None = None
) -> Outcome:
    """Subscribe ``subscriber`` to ``subject`` (in ``queue``); ``publisher`` (the daemon
    identity) publishes a token until it arrives (``delivered``) or the server refused the
    subscription (``refused``)."""
    token = secrets.token_hex(6).encode()
    async with subscriber.subscribe(subject, queue=queue) as mailbox:
        with anyio.move_on_after(_DEADLINE):
            while not _violated(logs, "subscription", subject):
                await publisher.publish(subject, token)  # again: interest may be in flight
                with anyio.move_on_after(0.02):
                    if (await mailbox.__anext__()).data == token:
                        return "delivered"
        return "refused" if _violated(logs, "subscription", subject) else "inconsistent"


# -- who gets in ---------------------------------------------------------------------------


async def test_an_anonymous_connection_is_refused_in_one_line(tmp_path: Path) -> None:
    async with _daemon(tmp_path) as daemon:
        with anyio.fail_after(3), pytest.raises(BusConnectionError) as refused:
            async with open_bus(daemon.bus.url, connect_timeout=2):
                pass
    message = str(refused.value)
    assert "authorization violation" in message and daemon.bus.url in message
    assert "anonymous" in message and "\n" not in message
    assert not refused.value.retryable


async def test_a_seed_the_server_does_not_know_is_refused(tmp_path: Path) -> None:
    stranger = ensure_seeds(tmp_path / "elsewhere")["client"]
    async with _daemon(tmp_path) as daemon:
        with pytest.raises(BusConnectionError, match="authorization violation"):
            async with open_bus(daemon.bus.url, connect_timeout=2,
                                credentials=Credentials(nkey_seed=stranger)):
                pass


async def test_the_cli_without_credentials_is_refused_in_one_line_exit_2(
    tmp_path: Path,
) -> None:
    async with _daemon(tmp_path) as daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "warden", "runs", "--nats", daemon.bus.url,
             "--data-dir", str(tmp_path / "cli")],
            capture_output=True, text=True, timeout=60, env=env, check=False))
    assert done.returncode == 2
    assert "authorization violation" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- what each identity may do -------------------------------------------------------------


async def test_a_client_submits_queries_and_watches_a_run(tmp_path: Path) -> None:
    async with _daemon(tmp_path) as daemon, _connections(daemon) as bus:
        client = bus["client"]
        run = await run_task(client, "fizzbuzz")  # warden.tasks, then follow's consumer
        listing = reply_decoder.decode(await client.request(
            subjects.api(daemon.daemon_id, "runs"), encoder.encode(RunsQuery()), timeout=10))
    assert run.status == "succeeded", run.error
    assert isinstance(listing, RunList) and [r.id for r in listing.runs] == [run.id]


def _API(verb: subjects.ApiVerb) -> str:
    # Permissions do not depend on which daemon a subject names: a stand-in id.
    return subjects.api("d-1", verb)


PUBLISH: dict[Identity, dict[str, Outcome]] = {
    "client": {
        subjects.TASKS: "delivered",
        _API("submit"): "delivered",
        _API("runs"): "delivered",
        _API("show"): "delivered",
        _API("cancel"): "delivered",
        _API("resume"): "delivered",
        _API("ping"): "delivered",
        "warden.api.submit": "refused",  # not a daemon's subject: no verb without its daemon
        "$SRV.PING": "delivered",
        "warden.work.code": "refused",
        "warden.work.review": "refused",
        _API("dlq"): "refused",
        _API("dlq_retry"): "refused",
        "warden.approvals.r-1": "refused",
        "warden.admin.stop": "refused",
        "warden.runs.r-1.events": "refused",
        "warden.done.r-1": "refused",
    },
    "operator": {
        subjects.TASKS: "delivered",
        _API("show"): "delivered",
        _API("dlq"): "delivered",
        _API("dlq_retry"): "delivered",
        "warden.approvals.r-1": "delivered",
        "warden.admin.stop": "delivered",
        "warden.work.code": "refused",
        "warden.runs.r-1.events": "refused",
        "warden.done.r-1": "refused",
    },
    "worker": {
        subjects.TASKS: "refused",
        _API("submit"): "refused",
        _API("show"): "refused",
        "warden.approvals.r-1": "refused",
        "warden.admin.stop": "refused",
        "warden.runs.r-1.events": "refused",
        "warden.done.r-1": "refused",
        "warden.work.code": "refused",
        "$SRV.PING": "refused",
    },
}


@pytest.mark.parametrize("identity", list(PUBLISH))
async def test_each_identity_publishes_only_where_its_permissions_allow(
    identity: Identity, tmp_path: Path
) -> None:
    # No local workers: nothing else in the daemon serves warden.work.* meanwhile.
    async with _daemon(tmp_path, local_workers=False) as daemon, _connections(daemon) as bus:
        with capture_logs() as logs:
            seen = {subject: await _publish_outcome(bus[identity], bus["daemon"], subject, logs)
                    for subject in PUBLISH[identity]}
    assert seen == PUBLISH[identity]


SUBSCRIBE: dict[Identity, dict[tuple[str, str | None], Outcome]] = {
    "client": {
        (subjects.run_done("r-1"), None): "delivered",
        (subjects.run_events("r-1"), None): "delivered",
        ("warden.work.code", None): "refused",
        ("warden.work.code", subjects.WORK_QUEUE_GROUP): "refused",
        ("warden.tasks", None): "refused",
        (_API("submit"), None): "refused",
        ("warden.approvals.r-1", None): "refused",
    },
    "operator": {
        (subjects.run_done("r-1"), None): "delivered",
        ("warden.approvals.r-1", None): "delivered",
        ("warden.work.code", None): "refused",
        (_API("submit"), None): "refused",
    },
    "worker": {
        ("warden.work.code", subjects.WORK_QUEUE_GROUP): "delivered",
        ("warden.work.code", None): "refused",  # only in the workers' queue group
        ("warden.work.code", "eavesdroppers"): "refused",
        (subjects.TASKS, None): "refused",
        (subjects.run_done("r-1"), None): "refused",
        (subjects.run_events("r-1"), None): "refused",
        (_API("submit"), None): "refused",
    },
}


@pytest.mark.parametrize("identity", list(SUBSCRIBE))
async def test_each_identity_subscribes_only_where_its_permissions_allow(
    identity: Identity, tmp_path: Path
) -> None:
    async with _daemon(tmp_path, local_workers=False) as daemon, _connections(daemon) as bus:
        with capture_logs() as logs:
            seen = {
                (subject, queue): await _subscribe_outcome(
                    bus[identity], bus["daemon"], subject, logs, queue=queue)
                for subject, queue in SUBSCRIBE[identity]
            }
    assert seen == SUBSCRIBE[identity]


@pytest.mark.parametrize("inbox", ["_INBOX_daemon.>", "_INBOX.>", "_INBOX_worker.>",
                                   "_INBOX_operator.>"])
async def test_a_client_cannot_subscribe_to_another_identitys_inbox(
    inbox: str, tmp_path: Path
) -> None:
    async with _daemon(tmp_path) as daemon, _connections(daemon) as bus:
        with capture_logs() as logs:
            async with bus["client"].subscribe(inbox):
                await _await_violation(logs, "subscription", inbox)


async def test_a_worker_answers_the_daemons_requests_and_nothing_else(tmp_path: Path) -> None:
    async with _daemon(tmp_path, local_workers=False) as daemon, _connections(daemon) as bus:
        worker = bus["worker"]

        async def answer(envelope: Any) -> None:
            await worker.respond(envelope, b"pong:" + envelope.data)

        with capture_logs() as logs:
            async with worker.serve(subjects.work("code"), answer,
                                    queue=subjects.WORK_QUEUE_GROUP):
                with anyio.fail_after(_DEADLINE):
                    while True:  # until the server has the worker's interest
                        try:
                            reply = await bus["daemon"].request(subjects.work("code"), b"1",
                                                                timeout=1)
                            break
                        except NoRespondersError:
                            await anyio.sleep(0.02)
                # A reply subject it was never sent is not a reply: refused.
                await worker.publish("_INBOX_daemon.forged", b"x")
                await _await_violation(logs, "publish", "_INBOX_daemon.forged")
    assert reply == b"pong:1"


async def test_the_operator_lists_dead_letters_a_client_may_not(tmp_path: Path) -> None:
    async with _daemon(tmp_path) as daemon, _connections(daemon) as bus:
        letters = reply_decoder.decode(await bus["operator"].request(
            subjects.api(daemon.daemon_id, "dlq"), encoder.encode(RunsQuery()), timeout=10))
        with capture_logs() as logs:
            with pytest.raises(BusTimeoutError):  # refused by the server: no reply comes
                await bus["client"].request(subjects.api(daemon.daemon_id, "dlq"),
                                            encoder.encode(RunsQuery()), timeout=2)
        assert _violated(logs, "publish", subjects.api(daemon.daemon_id, "dlq"))
    assert isinstance(letters, DeadLetterList)


@pytest.mark.parametrize("identity", ["client", "operator", "worker"])
async def test_only_the_daemon_may_create_a_consumer(identity: Identity, tmp_path: Path) -> None:
    # A consumer's delivery subject is its creator's choice, and JetStream delivers there
    # across publish permissions (measured: a client's consumer on WARDEN_EVENTS with
    # delivery subject warden.work.code had stored events delivered there). So clients
    # follow events with direct gets and may create no consumer at all.
    stream = subjects.EVENTS_STREAM
    create = f"$JS.API.CONSUMER.CREATE.{stream}"
    config = {"deliver_subject": subjects.work("code"), "ack_policy": "none",
              "filter_subject": subjects.run_events("r-1")}
    async with _daemon(tmp_path, local_workers=False) as daemon, _connections(daemon) as bus:
        async with bus["daemon"].subscribe(subjects.work("code")) as work:
            await bus["daemon"].publish(subjects.run_events("r-1"), b'{"stored": 1}')
            with capture_logs() as logs:
                with pytest.raises(BusTimeoutError):  # refused: no answer comes
                    await bus[identity].request(create, json.dumps(
                        {"stream_name": stream, "config": config}).encode(), timeout=2)
            assert _violated(logs, "publish", create)
            with anyio.move_on_after(0.5):  # what a consumer would have delivered at once
                delivered = await work.__anext__()
                pytest.fail(f"a consumer delivered {delivered.data!r} onto warden.work.code")
        # The client still follows events: history and live, by direct gets.
        if identity == "client":
            async with bus["client"].follow(subjects.run_events("r-1")) as events:
                with anyio.fail_after(_DEADLINE):
                    first = await anext(events)
                    await bus["daemon"].publish(subjects.run_events("r-1"), b'{"live": 2}')
                    second = await anext(events)
            assert (first, second) == (b'{"stored": 1}', b'{"live": 2}')


# -- the files ------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_credentials_daemon_json_and_server_config_are_private(tmp_path: Path) -> None:
    async with _daemon(tmp_path) as daemon:
        data_dir = daemon.data_dir
        record = json.loads((data_dir / DAEMON_FILE).read_text())
        modes = {
            "credentials/": _mode(data_dir / CREDENTIALS_DIR),
            DAEMON_FILE: _mode(data_dir / DAEMON_FILE),
            CONFIG_FILE: _mode(data_dir / CONFIG_FILE),
            **{f"{i}.nk": _mode(data_dir / CREDENTIALS_DIR / f"{i}.nk") for i in IDENTITIES},
        }
        config = (data_dir / CONFIG_FILE).read_text()
        seeds = [(data_dir / CREDENTIALS_DIR / f"{i}.nk").read_text().strip()
                 for i in IDENTITIES]
    assert modes == {"credentials/": 0o700, DAEMON_FILE: 0o600, CONFIG_FILE: 0o600,
                     **{f"{i}.nk": 0o600 for i in IDENTITIES}}
    assert set(record) == {"pid", "url", "daemon_id", "credentials", "http"}
    # Local clients get the client, operator and worker seeds; never the daemon's.
    assert record["credentials"] == {
        i: str(data_dir / CREDENTIALS_DIR / f"{i}.nk") for i in ("client", "operator", "worker")}
    assert "no_auth_user" not in config and config.count("nkey:") == len(IDENTITIES)
    assert all(seed.startswith("SU") and seed not in config for seed in seeds)


async def test_seeds_are_made_once_and_reused_on_the_next_start(tmp_path: Path) -> None:
    async with _daemon(tmp_path) as daemon:
        first = {i: (daemon.data_dir / CREDENTIALS_DIR / f"{i}.nk").read_bytes()
                 for i in IDENTITIES}
    async with _daemon(tmp_path) as daemon, _connections(daemon) as bus:
        again = {i: (daemon.data_dir / CREDENTIALS_DIR / f"{i}.nk").read_bytes()
                 for i in IDENTITIES}
        assert await bus["client"].request(subjects.api(daemon.daemon_id, "ping"), b"", timeout=10)
    assert again == first


async def test_no_seed_appears_in_the_logs(tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with _daemon(tmp_path) as daemon, _connections(daemon) as bus:
            await run_task(bus["client"], "fizzbuzz")
            seeds = [(daemon.data_dir / CREDENTIALS_DIR / f"{i}.nk").read_text().strip()
                     for i in IDENTITIES]
            server_log = (daemon.data_dir / LOG_FILE).read_text()
    text = repr(logs) + server_log
    assert logs and server_log
    assert not [seed for seed in seeds if seed in text]


async def test_warden_worker_connects_as_the_worker_daemon_json_names(tmp_path: Path) -> None:
    async with _daemon(tmp_path, local_workers=False) as daemon:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("WARDEN_") and k != "ANTHROPIC_API_KEY"}
        env["WARDEN_MODELS__PROVIDER"] = "scripted"
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, reaped below
            [sys.executable, "-m", "warden", "worker", "--role", "code",
             "--data-dir", str(daemon.data_dir)],  # no --nats: daemon.json says how
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            with anyio.fail_after(30):  # until it answers on its subject
                while True:
                    try:
                        await daemon.bus.request(subjects.work("code"), b"{}", timeout=2)
                        break
                    except NoRespondersError:
                        await anyio.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(proc.wait, 10)
    assert code == 0
