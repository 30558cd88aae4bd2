"""The anomaly rules (supervisor/anomaly.py): baselines, thresholds, too few runs, repeated
tool-call patterns; and their records in the journal (schema v5, journal_anomaly.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from warden.config.settings import AnomalySettings
from warden.supervisor.anomaly import (
    RunProfile,
    ToolUse,
    assess,
    outliers,
    repeated_calls,
    repeated_sequence,
    run_kind,
    threshold,
    tool_patterns,
)
from warden.supervisor.anomaly_watch import AnomalyWatch
from warden.supervisor.journal import open_journal

pytestmark = pytest.mark.anyio

SETTINGS = AnomalySettings(min_baseline_runs=5, mad_k=5.0, median_ratio=2.0, min_retries=2)


def profile(cost: float = 0.01, duration: float = 10.0, retries: int = 0,
            tokens: float = 1000.0) -> RunProfile:
    return RunProfile(kind="code>review", cost_usd=cost, duration_s=duration, retries=retries,
                      tokens_per_step=tokens)


BASELINE = [profile(cost=c, duration=d, tokens=t) for c, d, t in [
    (0.010, 10.0, 1000.0), (0.011, 11.0, 1100.0), (0.009, 9.0, 900.0),
    (0.010, 12.0, 1000.0), (0.012, 10.0, 1050.0),
]]


def test_the_kind_of_a_run_is_the_sequence_of_its_roles() -> None:
    assert run_kind(["research", "code", "review"]) == "research>code>review"
    assert run_kind(["code", "review"]) != run_kind(["review", "code"])


def test_the_threshold_is_the_larger_of_median_plus_k_mad_and_a_multiple_of_the_median(
) -> None:
    # median 10, MAD 1: 10 + 5*1 = 15 < 2*10 = 20
    assert threshold([9.0, 10.0, 11.0, 10.0, 12.0], SETTINGS) == 20.0
    # median 10, MAD 5: 10 + 5*5 = 35 > 20
    assert threshold([5.0, 10.0, 15.0, 10.0, 20.0], SETTINGS) == 35.0


def test_too_few_baseline_runs_give_no_threshold_and_no_flag() -> None:
    assert threshold([1.0, 1.0, 1.0, 1.0], SETTINGS) is None
    assert outliers(profile(cost=100.0, duration=1e6, tokens=1e9), BASELINE[:4], SETTINGS) == []


def test_a_run_like_its_baseline_is_not_flagged() -> None:
    assert assess(profile(cost=0.011, duration=11.5, tokens=1080.0), BASELINE, [],
                  SETTINGS) == []


@pytest.mark.parametrize(("run", "kind"), [
    (profile(cost=0.05), "cost"),
    (profile(duration=60.0), "duration"),
    (profile(tokens=5000.0), "tokens_per_step"),
    (profile(retries=3), "retries"),
])
def test_a_measure_far_above_its_baseline_is_flagged_alone(run: RunProfile, kind: str) -> None:
    flags = outliers(run, BASELINE, SETTINGS)
    assert [f.kind for f in flags] == [kind]
    assert flags[0].value > flags[0].threshold
    assert "code>review" in flags[0].detail


def test_a_value_just_under_the_threshold_is_not_flagged_and_just_over_is() -> None:
    # cost: median 0.010, MAD 0.001 -> max(0.015, 0.020) = 0.020
    assert outliers(profile(cost=0.0199), BASELINE, SETTINGS) == []
    assert [f.kind for f in outliers(profile(cost=0.0201), BASELINE, SETTINGS)] == ["cost"]


def test_one_retry_against_a_baseline_of_none_is_below_min_retries() -> None:
    assert outliers(profile(retries=1), BASELINE, SETTINGS) == []
    assert [f.kind for f in outliers(profile(retries=2), BASELINE, SETTINGS)] == ["retries"]


def test_a_duration_under_min_duration_s_is_not_flagged_however_far_above() -> None:
    fast = [profile(duration=d) for d in (0.01, 0.02, 0.01, 0.01, 0.02)]
    assert outliers(profile(duration=0.9), fast, SETTINGS) == []
    assert [f.kind for f in outliers(profile(duration=1.5), fast, SETTINGS)] == ["duration"]


def test_a_sequence_of_tool_names_repeated_back_to_back_is_found() -> None:
    names = ["list_files", "grep", "read_file", "grep", "read_file", "grep", "read_file"]
    assert repeated_sequence(names, times=3, max_length=4) == (("grep", "read_file"), 3)
    assert repeated_sequence(names, times=4, max_length=4) is None


def test_one_tool_name_repeated_is_not_a_sequence() -> None:
    # Reading many files in a row is normal; the loop guard handles identical calls.
    assert repeated_sequence(["read_file"] * 10, times=3, max_length=4) is None


def test_a_repeated_sequence_longer_than_max_length_is_not_looked_for() -> None:
    names = ["a", "b", "c"] * 3
    assert repeated_sequence(names, times=3, max_length=3) == (("a", "b", "c"), 3)
    assert repeated_sequence(names, times=3, max_length=2) is None


def test_the_same_call_in_enough_steps_is_found_and_other_arguments_are_not_the_same() -> None:
    same = [ToolUse(step=s, name="fetch", arguments='{"url":"x"}') for s in (0, 1, 2)]
    assert repeated_calls(same, steps=3) == (same[2], 3)
    other = [*same[:2], ToolUse(step=2, name="fetch", arguments='{"url":"y"}')]
    assert repeated_calls(other, steps=3) is None


def test_tool_patterns_flag_a_sequence_within_a_step_but_not_across_steps() -> None:
    across = [ToolUse(step=s, name=n, arguments="{}") for s in (0, 1, 2)
              for n in ("grep", "read_file")]
    flags = tool_patterns(across, AnomalySettings(cross_step_repeats=0))
    assert flags == []
    within = [ToolUse(step=1, name=n, arguments=f'{{"i":{i}}}') for i in range(3)
              for n in ("grep", "read_file")]
    flags = tool_patterns(within, AnomalySettings(cross_step_repeats=0))
    assert [f.kind for f in flags] == ["repeated_tool_sequence"]
    assert "step 1" in flags[0].detail


def test_repeat_settings_of_zero_turn_the_pattern_rules_off() -> None:
    uses = [ToolUse(step=s, name=n, arguments="{}") for s in (0, 1, 2)
            for _ in range(3) for n in ("grep", "read_file")]
    assert tool_patterns(uses, AnomalySettings(repeat_threshold=0, cross_step_repeats=0)) == []
    assert {f.kind for f in tool_patterns(uses, AnomalySettings())} == {
        "repeated_tool_sequence", "repeated_tool_call"}


# -- in the journal ---------------------------------------------------------------------


async def _ended(journal, run_id: str, tokens: int, roles: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    await journal.create_run(run_id, text="t", status="queued")
    await journal.transition(run_id, "planning", wait=False)
    await journal.transition(run_id, "running", wait=False)
    for index, role in enumerate(roles):
        await journal.record_step(run_id, index, role=role, instruction="do it",
                                  status="succeeded", tokens=tokens)
    await journal.transition(run_id, "succeeded", tokens=tokens * len(roles), cost_usd=0.01)


async def test_an_outlier_is_flagged_against_runs_of_its_kind_only_and_read_back(
    tmp_path: Path,
) -> None:
    settings = AnomalySettings(min_baseline_runs=3)
    flagged = []
    async with open_journal(tmp_path / "j.sqlite") as journal:
        watch = AnomalyWatch(journal, settings, on_flag=flagged.append)
        for i in range(3):  # the baseline: three ordinary runs of kind code>review
            await _ended(journal, f"base-{i}", 100, ("code", "review"))
            assert await watch.assess(f"base-{i}") == []
        await _ended(journal, "other-kind", 1000, ("research",))  # no baseline of its kind
        assert await watch.assess("other-kind") == []
        await _ended(journal, "outlier", 1000, ("code", "review"))
        flags = await watch.assess("outlier")
        run = await journal.get_run("outlier")
        ordinary = await journal.get_run("base-2")
    assert [f.kind for f in flags] == ["tokens_per_step"]
    assert [f.kind for f in flagged] == ["tokens_per_step"]
    assert run is not None and [a.kind for a in run.anomalies] == ["tokens_per_step"]
    assert run.anomalies[0].value == 1000.0 and "code>review" in run.anomalies[0].detail
    assert ordinary is not None and ordinary.anomalies == []
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        kinds = dict(db.execute("SELECT run_id, kind FROM run_profiles").fetchall())
    assert kinds["outlier"] == "code>review" and kinds["other-kind"] == "research"


async def test_a_version_4_journal_is_migrated_to_5_with_the_anomaly_tables(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("old", text="t", status="queued")
    with sqlite3.connect(path) as db:  # what a version-4 warden left
        db.executescript("DROP TABLE run_profiles; DROP TABLE anomalies;"
                         "PRAGMA user_version = 4;")
    async with open_journal(path) as journal:
        await _ended(journal, "new", 10, ("code",))
        flags = await AnomalyWatch(journal, AnomalySettings()).assess("new")
        old = await journal.get_run("old")
    assert flags == [] and old is not None and old.anomalies == []
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 6
        assert db.execute("SELECT kind FROM run_profiles").fetchall() == [("code",)]
