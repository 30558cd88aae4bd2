"""A local OpenAI-compatible model end to end (issue 12, point 5): a real daemon
(``models.provider = "openai"``, embedded nats-server, SQLite journal) runs a whole run with
tool calls against a local Chat Completions server through the ``openai`` SDK; the journal
records each call's usage, cache reads included, and its cost at the configured price,
which is 0 for the self-hosted model of the steps. Then, with per-model endpoints, one
daemon mixes the Messages API with a local endpoint, and a fallback chain ends in a local
model that serves while the first answers 529."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from warden.actors.model_router import ModelRouter
from warden.actors.pricing import PriceTable
from warden.config import Settings

from tests.integration.chat_completions_api import ChatCompletionsAPI, ToolCall
from tests.integration.harness import make_settings, run_task, running_daemon
from tests.integration.messages_api import Answer, MessagesAPI, Refuse, Request
from tests.integration.test_model_failures import provider_settings, running_daemon_with_key

pytestmark = pytest.mark.anyio

KEY_ENV = "WARDEN_TEST_LOCAL_LLM_KEY"
KEY = "sk-local-0123456789-SECRET"
PAID = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 0.3}
FREE = {"input_per_mtok": 0.0, "output_per_mtok": 0.0}
HELLO = "print('hello from a local model')\n"


def local_settings(tmp_path: Path, base_url: str) -> Settings:
    """Every model at the local endpoint: a paid planner, free self-hosted workers."""
    roles = {f"roles__{role}__model": "qwen2.5-coder-7b" for role in ("research", "code",
                                                                      "review")}
    return make_settings(
        tmp_path,
        models__provider="openai", models__openai_base_url=base_url,
        models__openai_api_key_env=KEY_ENV, models__planner="gpt-oss-120b",
        models__timeout_s=5.0, limits__retry_base_s=0.01, limits__retry_max_s=0.1,
        pricing__models={"gpt-oss-120b": PAID, "qwen2.5-coder-7b": FREE}, **roles,
    )


async def test_a_run_with_tool_calls_succeeds_against_a_local_server_and_is_priced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    steps = [ToolCall("write_file", {"path": "hello.py", "content": HELLO}),
             ToolCall("ledger_append", {"text": "wrote hello.py"})]
    with ChatCompletionsAPI(plan=[("code", "Write hello.py.")], steps=steps,
                            step_text="Wrote hello.py and noted it in the ledger.",
                            served_model="Qwen/Qwen2.5-Coder-7B-Instruct") as api:
        settings = local_settings(tmp_path, api.url)
        async with running_daemon(settings) as (daemon, client):
            run = await run_task(client, "Write hello.py")
            calls = await daemon.journal.calls(run.id)
    assert run.status == "succeeded", run
    data = tmp_path / "data"
    assert (data / "workspaces" / run.id / "hello.py").read_text() == HELLO
    assert "wrote hello.py" in (data / "ledger.txt").read_text()
    # plan, three step turns (write_file, ledger_append, the answer), synthesis.
    assert [r.kind for r in api.requests] == ["plan", "step", "step", "step", "synth"]
    assert all(r.authorization == f"Bearer {KEY}" for r in api.received)
    tools = [c for c in calls if c.kind == "tool"]
    assert [(c.name, c.ok) for c in tools] == [("write_file", True), ("ledger_append", True)]
    assert json.loads(tools[0].request) == {"path": "hello.py", "content": HELLO}
    models = [c for c in calls if c.kind == "model"]
    assert [c.name for c in models] == ["gpt-oss-120b", *["qwen2.5-coder-7b"] * 3,
                                        "gpt-oss-120b"]
    assert all(c.input_tokens > 0 and c.output_tokens > 0 for c in models)
    # Each step turn repeats the turn before it: OpenAI-style prefix caching reads it.
    step_calls = [c for c in models if c.purpose == "step"]
    assert step_calls[0].cache_read_tokens == 0
    assert all(c.cache_read_tokens > 0 for c in step_calls[1:])
    assert all(c.cache_creation_tokens == 0 for c in models)
    prices = PriceTable(settings.pricing)
    for call in models:
        entry = prices.price(call.name)
        assert call.cost_usd == pytest.approx(
            (call.input_tokens * entry.input_per_mtok + call.output_tokens * entry.output_per_mtok
             + call.cache_read_tokens * entry.cache_read_per_mtok) / 1e6, rel=1e-6, abs=1e-12)
    assert all(c.cost_usd == 0.0 for c in step_calls)
    assert models[0].cost_usd > 0
    assert run.cost_usd == pytest.approx(sum(c.cost_usd for c in models), rel=1e-6)
    # The key went to the endpoint and nowhere else: not into the journal.
    journal = b"".join(path.read_bytes() for path in data.glob("journal.sqlite*"))
    assert KEY.encode() not in journal


async def test_one_daemon_mixes_an_anthropic_planner_with_a_role_served_by_a_local_endpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with (
        MessagesAPI(plan=[("research", "Look around."), ("code", "Write hello.py.")]) as claude,
        ChatCompletionsAPI(steps=[ToolCall("write_file", {"path": "hello.py", "content": HELLO})],
                           step_text="Wrote hello.py.") as local,
    ):
        settings = provider_settings(
            tmp_path, claude.url, roles__code__model="qwen-local",
            models__endpoints={"qwen-local": {"provider": "openai", "base_url": local.url}},
            **{"pricing__models__qwen-local": FREE})
        async with running_daemon_with_key(settings) as (daemon, client):
            assert isinstance(daemon.model, ModelRouter)
            run = await run_task(client, "Look, then write hello.py")
            calls = await daemon.journal.calls(run.id)
    assert run.status == "succeeded", run
    assert (tmp_path / "data" / "workspaces" / run.id / "hello.py").read_text() == HELLO
    # The planner, the research step and the synthesis went to the Messages API; the
    # code role's turns (write_file, then the answer) to the local server, without a key.
    assert [r.kind for r in claude.requests] == ["plan", "step", "synth"]
    assert [(r.kind, r.role) for r in local.requests] == [("step", "code")] * 2
    assert all(r.authorization is None for r in local.received)
    served = [(c.purpose, c.name, c.cost_usd > 0) for c in calls if c.kind == "model"]
    assert served == [("plan", settings.models.planner, True),
                      ("step", settings.roles["research"].model, True),
                      ("step", "qwen-local", False), ("step", "qwen-local", False),
                      ("synthesize", settings.models.planner, True)]


async def test_a_429_and_a_500_from_the_local_server_are_retried_and_the_run_succeeds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    refusals = {("step", 0): Refuse(429, "rate_limit", "slow down", retry_after="0"),
                ("synth", 0): Refuse(500, "server_error", "try again")}
    seen: dict[str, int] = {}

    def policy(request: Request) -> Answer | Refuse:
        nth = seen[request.kind] = seen.get(request.kind, -1) + 1
        return refusals.get((request.kind, nth), Answer())

    with ChatCompletionsAPI(policy, plan=[("research", "Look around.")]) as api:
        async with running_daemon(local_settings(tmp_path, api.url)) as (daemon, client):
            run = await run_task(client, "Look around")
            calls = await daemon.journal.calls(run.id)
    assert run.status == "succeeded", run
    assert [(r.kind, r.status) for r in api.requests] == [
        ("plan", 200), ("step", 429), ("step", 200), ("synth", 500), ("synth", 200)]
    # Only the answered calls were billed, so only they are recorded.
    assert [c.purpose for c in calls if c.kind == "model"] == ["plan", "step", "synthesize"]


async def test_a_fallback_chain_ends_in_a_local_model_that_serves_while_the_first_is_overloaded(
        tmp_path: Path) -> None:
    first = "claude-sonnet-4-6"

    def overloaded_steps(request: Request) -> Answer | Refuse:
        return Refuse(529, "overloaded_error", "Overloaded") if request.kind == "step" \
            else Answer()

    with (
        MessagesAPI(overloaded_steps) as claude,
        ChatCompletionsAPI(step_text="Looked around locally.") as local,
    ):
        settings = provider_settings(
            tmp_path, claude.url, roles__research__model=first,
            roles__research__fallback=["qwen-local"],
            models__endpoints={"qwen-local": {"base_url": local.url}},
            **{"pricing__models__qwen-local": FREE})
        async with running_daemon_with_key(settings) as (daemon, client):
            run = await run_task(client, "Look around")
            calls = await daemon.journal.calls(run.id)
    assert run.status == "succeeded", run
    assert [(r.kind, r.status) for r in claude.requests] == [
        ("plan", 200), ("step", 529), ("synth", 200)]
    assert [(r.kind, r.role) for r in local.requests] == [("step", "research")]
    (step,) = [c for c in calls if c.kind == "model" and c.purpose == "step"]
    request = json.loads(step.request)
    assert (request["model"], request.get("served_by"), request.get("fallback")) == (
        first, "qwen-local", "overloaded")
    assert step.cost_usd == 0.0 and step.input_tokens > 0
