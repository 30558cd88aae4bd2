"""Model tiering and fallback (``supervisor/tiers.py``), driven through whole runs on the
in-memory dispatcher: a chain serves from its next model while the first is overloaded
(529) or its breaker is open, returns to the first when it recovers, records which model
served and why, downgrades when the budget asks, and never lets a fallback break the
budget bound. The fakes are in ``run_fakes.py``."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from warden.actors.admission import refuse_turn, step_turn
from warden.actors.errors import ModelRateLimitedError
from warden.actors.model import ModelReply, ModelRequest
from warden.bus.wire import Message, TextBlock, TurnRequest
from warden.config import ConfigError
from warden.config.settings import ModelSettings, RoleSettings
from warden.supervisor.interceptors import ModelCall
from warden.supervisor.journal import Journal
from warden.supervisor.tiers import chain_of

from tests.supervisor.run_fakes import (
    harness,
    plan_of,
    settings_for,
    text,
)

pytestmark = pytest.mark.anyio

FIRST, SECOND = "claude-haiku-4-5", "claude-sonnet-4-6"
CHAIN = {"models__planner_fallback": [SECOND], "roles__research__fallback": [SECOND]}


def overloaded(model: str) -> ModelRateLimitedError:
    return ModelRateLimitedError(model, "overloaded_error: Overloaded", status=529)


def one_step(request: ModelRequest) -> ModelReply:
    if request.purpose == "plan":
        return plan_of(("research", "look"))
    return text("fine")


async def model_calls(journal: Journal, run_id: str) -> list[dict[str, object]]:
    """The request records of the run's model calls in the journal."""
    return [json.loads(c.request) for c in await journal.calls(run_id) if c.kind == "model"]


async def test_a_529_is_served_by_the_next_model_at_once_and_recorded(
    tmp_path: Path, journal: Journal
) -> None:
    def answer(request: ModelRequest) -> ModelReply | Exception:
        return overloaded(FIRST) if request.model == FIRST else one_step(request)

    # A patience far shorter than any backoff: a fallback must not wait the first out.
    h = harness(tmp_path, journal, answer, models__patience_s=0.001, **CHAIN)

    with anyio.fail_after(5):
        assert await h.run() == "succeeded"

    asked = [r.model for r in h.model.requests]
    assert asked == [FIRST, SECOND] * 3  # plan, step, synthesis: each tried FIRST once
    calls = await model_calls(journal, "r-1")
    assert [(c["model"], c["served_by"], c["fallback"]) for c in calls] == [
        (FIRST, SECOND, "overloaded")] * 3
    run = await journal.get_run("r-1")
    # priced at the model that served (sonnet: $3 / $15 per million), not the one asked
    assert run is not None and run.cost_usd == pytest.approx(3 * (100 * 3 + 20 * 15) / 1e6)


async def test_an_open_breaker_is_skipped_and_the_chain_returns_to_its_first_model(
    tmp_path: Path, journal: Journal
) -> None:
    healthy = False

    def answer(request: ModelRequest) -> ModelReply | Exception:
        if request.model == FIRST and not healthy:
            return overloaded(FIRST)
        return one_step(request)

    h = harness(tmp_path, journal, answer, breaker__failure_threshold=2,
                breaker__cooldown_s=0.2, **CHAIN)
    context = h.context()
    h.context = lambda: context  # type: ignore[method-assign]  # one breaker for all runs

    assert await h.run("r-1") == "succeeded"  # two 529s from FIRST open its breaker
    assert context.model_breakers[FIRST].state == "open"
    before = len(h.model.requests)
    assert await h.run("r-2") == "succeeded"
    assert {r.model for r in h.model.requests[before:]} == {SECOND}  # FIRST not asked
    assert {c.get("fallback") for c in await model_calls(journal, "r-2")} == {
        "breaker_open"}

    healthy = True
    await anyio.sleep(0.2)  # the cooldown: the next call through FIRST is a probe
    before = len(h.model.requests)
    assert await h.run("r-3") == "succeeded"

    assert [r.model for r in h.model.requests[before:]] == [FIRST] * 3
    assert context.model_breakers[FIRST].state == "closed"
    assert all("fallback" not in c for c in await model_calls(journal, "r-3"))


async def test_a_chain_is_reserved_at_its_dearest_model(
    tmp_path: Path, journal: Journal
) -> None:
    # 2048 tokens of output: haiku's worst case is ~$0.0103, sonnet's ~$0.031.
    budget = 0.02
    alone = harness(tmp_path / "alone", journal, one_step)
    assert await alone.run("r-alone", budget_usd=budget) == "succeeded"

    chained = harness(tmp_path / "chained", journal, one_step, **CHAIN)
    status = await chained.run("r-chained", budget_usd=budget)

    run = await journal.get_run("r-chained")
    assert status == "budget_exhausted"
    assert chained.model.requests == []  # refused before any request, whichever model
    assert run is not None and run.cost_usd == 0


async def test_a_run_low_on_budget_moves_its_later_calls_down_the_chain(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, one_step, models__planner=SECOND,
                models__planner_fallback=[FIRST], roles__research__model=SECOND,
                roles__research__fallback=[FIRST], budgets__downgrade_below=0.99)

    # $0.04: the plan starts with all of it left and sonnet's worst case ($0.031) fits;
    # once the plan has spent anything, less than 99 % is left.
    assert await h.run(budget_usd=0.04) == "succeeded"

    assert [r.model for r in h.model.requests] == [SECOND, FIRST, FIRST]
    calls = await model_calls(journal, "r-1")
    assert [(c.get("served_by"), c.get("fallback")) for c in calls] == [
        (None, None), (FIRST, "budget"), (FIRST, "budget")]


def test_a_chain_of_one_model_is_never_downgraded() -> None:
    call = ModelCall(key="k", purpose="plan", role="planner", model=FIRST, system="",
                     messages=[], tools=[], max_tokens=1)
    assert chain_of(call, downgrade=True) == ((FIRST,), None)


@pytest.mark.parametrize(("overrides", "key"), [
    ({"roles__research__fallback": ["gpt-nothing"]}, "roles.research.fallback"),
    ({"roles__research__fallback": [FIRST]}, "roles.research.fallback"),
    ({"models__planner_fallback": ["gpt-nothing"]}, "models.planner_fallback"),
    ({"models__synthesizer": "gpt-nothing"}, "models.synthesizer"),
    ({"models__synthesizer_fallback": [SECOND]}, "models.synthesizer_fallback"),
])
def test_a_bad_chain_is_a_config_error_naming_its_key(
    tmp_path: Path, overrides: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_for(tmp_path, **overrides)
    assert raised.value.key == key


def test_the_synthesis_chain_is_the_planners_unless_it_is_set() -> None:
    models = ModelSettings(planner=SECOND, planner_fallback=[FIRST])
    assert models.synthesis_chain == (SECOND, FIRST)
    own = ModelSettings(planner=SECOND, synthesizer=FIRST)
    assert own.synthesis_chain == (FIRST,)


def test_a_worker_accepts_every_model_of_its_roles_chain_and_no_other() -> None:
    role = RoleSettings(model=FIRST, fallback=[SECOND], tools=[], prompt="p")
    expected = step_turn(role, ModelSettings())

    def turn(model: str) -> TurnRequest:
        return TurnRequest(run_id="r-1", step=0, turn=0, role="code", max_tokens=10,
                           model=model, system="p",
                           messages=[Message(role="user", content=[TextBlock(text="hi")])])

    for model in (FIRST, SECOND):
        assert refuse_turn(turn(model), role="code", expected=expected, tools=[],
                           allowlist=[]) is None
    refusal = refuse_turn(turn("claude-opus-4-5"), role="code", expected=expected,
                          tools=[], allowlist=[])
    assert refusal is not None and refusal.field == "model"
