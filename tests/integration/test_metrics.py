"""/metrics and anomaly flags against a whole daemon: a real nats-server, SQLite file and
HTTP server (supervisor/metrics.py, supervisor/anomaly_watch.py).

One daemon runs a run of every ending (succeeded, failed, degraded, budget_exhausted,
needs_human, cancelled, rejected), one of them after waiting for an approval and one
refused a tool outside its allowlist; ``/metrics`` is then scraped and parsed with
prometheus_client's own parser, and every name the shipped Grafana dashboard queries must
be in it. Another daemon flags an outlier run against the runs of its kind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from warden.bus import subjects
from warden.bus.wire import RunQuery, RunSummary, TaskSubmission, encoder, reply_decoder
from warden.supervisor import cli as cli_module
from warden.supervisor.cli import main
from warden.supervisor.daemon import Daemon
from warden.supervisor.metrics import METRIC_NAMES, Metrics

from tests.integration.harness import api, make_settings, run_task, running_daemon, show, wait_for
from tests.integration.test_dashboard import logged_in

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "warden.json"

SCRIPT = """
[scenario.asks_approval]
[[scenario.asks_approval.plan]]
role = "research"
instruction = "Append a line."
[[scenario.asks_approval.turns.research]]
tool = "ledger_append"
input = { text = "needs a person" }
[[scenario.asks_approval.turns.research]]
text = "appended: {last_result}"

[scenario.off_list]
[[scenario.off_list.plan]]
role = "research"
instruction = "Write something (research may not)."
[[scenario.off_list.turns.research]]
tool = "write_file"
input = { path = "x.txt", content = "x" }
[[scenario.off_list.turns.research]]
text = "refused: {last_result}"

[scenario.steady]
[[scenario.steady.plan]]
role = "research"
instruction = "Say what is there."
[[scenario.steady.turns.research]]
text = "nothing much"

[scenario.outlier]
[[scenario.outlier.plan]]
role = "research"
instruction = "Say what is there."
[[scenario.outlier.turns.research]]
tools = [
  { name = "list_files", input = { path = "." } },
  { name = "grep", input = { pattern = "x" } },
  { name = "list_files", input = { path = "." } },
  { name = "grep", input = { pattern = "y" } },
  { name = "list_files", input = { path = "." } },
  { name = "grep", input = { pattern = "z" } },
]
[[scenario.outlier.turns.research]]
text = "looked everywhere, three times over: {last_result}"
"""

TYPES = {  # family name (as the parser gives it: no _total) -> type
    "warden_runs_started": "counter", "warden_runs_ended": "counter",
    "warden_runs_active": "gauge", "warden_approval_waits": "counter",
    "warden_run_duration_seconds": "histogram", "warden_step_duration_seconds": "histogram",
    "warden_step_retries": "counter", "warden_model_call_duration_seconds": "histogram",
    "warden_model_tokens": "counter", "warden_model_cost_usd": "counter",
    "warden_model_fallbacks": "counter",
    "warden_tool_calls": "counter", "warden_policy_decisions": "counter",
    "warden_anomalies": "counter", "warden_approvals_pending": "gauge",
    "warden_approvals_oldest_age_seconds": "gauge", "warden_breaker_state": "gauge",
    "warden_intake_queue_depth": "gauge", "warden_intake_in_flight": "gauge",
    "warden_intake_lag_seconds": "gauge", "warden_rate_limit_rpm": "gauge",
    "warden_rate_limit_waiting": "gauge",
}


def settings_for(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    script = tmp_path / "metrics.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    # The harness's scenarios (loop, bad_plan, failing_review) and these.
    values: dict[str, object] = {
        "models__script_files": [str(tmp_path / "test_scripts.toml"), str(script)]}
    return make_settings(tmp_path, **(values | overrides))


class Scrape:
    """One scrape of ``/metrics``, parsed."""

    def __init__(self, text: str) -> None:
        self.types = {}
        self.samples: list[Sample] = []
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            self.samples.extend(family.samples)

    def value(self, name: str, **labels: str) -> float:
        """The sum of samples ``name`` whose labels include ``labels``."""
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def labels(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and s.value}


async def scrape(daemon: Daemon) -> Scrape:
    assert daemon.http_url is not None
    async with httpx2.AsyncClient() as http:
        reply = await http.get(f"{daemon.http_url}/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(reply.text)


def dashboard_names() -> set[str]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    return {name for expr in exprs for name in re.findall(r"\bwarden_[a-z_]+", expr)}


async def submit(client, run_id: str, text: str, scenario: str) -> None:  # type: ignore[no-untyped-def]
    task = TaskSubmission(id=run_id, text=text, scenario=scenario)
    await client.publish_task(encoder.encode(task), msg_id=run_id)


async def test_after_runs_of_every_ending_metrics_have_their_names_and_types_and_the_dashboard_queries_only_those(  # noqa: E501
    tmp_path: Path,
) -> None:
    settings = settings_for(
        tmp_path, models__max_tokens=64, policy__loop_threshold=3,
        limits__step_retries=1, limits__retry_base_s=0.01,
        roles__review__on_failure="escalate", roles__research__auto_approve="low")
    async with running_daemon(settings) as (daemon, client):
        # An approval wait: the scrape sees it pending, then the run is cancelled.
        await submit(client, "waits-1", "append", "asks_approval")
        await wait_for(lambda: daemon.journal.approvals())
        waiting = await scrape(daemon)
        raw = await api(client, "cancel", encoder.encode(RunQuery(run_id="waits-1")))
        assert reply_decoder.decode(raw).status == "cancelled"  # type: ignore[union-attr]
        ended: Mapping[str, RunSummary] = {
            "succeeded": await run_task(client, "fizzbuzz"),
            "failed": await run_task(client, "anything", scenario="bad_plan"),
            "degraded": await run_task(client, "look around", scenario="loop"),
            "needs_human": await run_task(client, "judge it", scenario="failing_review"),
            "refused": await run_task(client, "write it", scenario="off_list"),
        }
        ended["budget_exhausted"] = await run_task(  # type: ignore[index]
            client, "fizzbuzz", budget_usd=ended["succeeded"].cost_usd * 0.8)
        await client.publish(subjects.TASKS, b"\x00\xffgarbage")  # rejected at intake
        ended_so = await wait_for(_rejected(daemon))
        after = await scrape(daemon)
        names = dashboard_names()

    assert {k: v.status for k, v in ended.items()} == {
        "succeeded": "succeeded", "failed": "failed", "degraded": "degraded",
        "needs_human": "needs_human", "refused": "succeeded",
        "budget_exhausted": "budget_exhausted"}
    assert ended_so
    # Names and types: exactly the families the module lists, each of its type.
    assert {k: v for k, v in after.types.items() if k.startswith("warden_")} == TYPES
    exposed = {s.name for s in after.samples}
    # No run here falls back to another model: test_fallback.py counts those.
    assert {n for n in METRIC_NAMES if n not in exposed and f"{n}_count" not in exposed
            } == {"warden_model_fallbacks_total"}
    # Every ending counted, the cancelled and the rejected runs too.
    for status in ("succeeded", "failed", "degraded", "needs_human", "budget_exhausted",
                   "cancelled", "rejected"):
        assert after.value("warden_runs_ended_total", status=status) >= 1, status
    assert after.value("warden_runs_ended_total", status="succeeded") == 2
    assert after.value("warden_runs_started_total") == 7  # every run but the rejected one
    assert after.value("warden_run_duration_seconds_count") == 7
    assert after.value("warden_step_retries_total", role="review") == 1
    assert after.value("warden_step_duration_seconds_count", role="research") >= 1
    assert after.value("warden_model_call_duration_seconds_count") >= 8
    assert after.value("warden_model_tokens_total", type="input") > 0
    assert after.value("warden_model_tokens_total", type="output") > 0
    assert after.value("warden_model_cost_usd_total") > 0
    assert after.value("warden_tool_calls_total", tool="list_files", outcome="ok") >= 2
    assert after.value("warden_tool_calls_total", tool="write_file", outcome="refused") == 1
    assert after.value("warden_policy_decisions_total", rule="allowlist", decision="deny") == 1
    assert after.value("warden_policy_decisions_total", rule="approval", decision="pause") == 1
    assert after.value("warden_approval_waits_total") == 1
    assert after.value("warden_policy_decisions_total", rule="loop", decision="deny") == 1
    # Scrape-time state: the approval pending while it waited, none after; breakers; intake.
    assert waiting.value("warden_approvals_pending") == 1
    assert waiting.value("warden_approvals_oldest_age_seconds") >= 0
    assert after.value("warden_approvals_pending") == 0
    assert after.value("warden_breaker_state", breaker="worker.research", state="closed") == 1
    assert after.value("warden_breaker_state", breaker="worker.research", state="open") == 0
    assert after.value("warden_intake_queue_depth") == 0
    assert after.value("warden_runs_active") == 0
    # Bounded labels: no run id anywhere.
    run_ids = {r.id for r in ended.values()} | {"waits-1"}
    assert not {v for s in after.samples for v in s.labels.values()} & run_ids
    # The dashboard queries only what is exposed.
    assert names, "the dashboard queries no metric"
    assert names <= exposed, sorted(names - exposed)


def _rejected(daemon: Daemon):  # type: ignore[no-untyped-def]
    async def found() -> bool:
        return any(r.status == "rejected" for r in await daemon.journal.list_runs(limit=20))
    return found


async def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    async with running_daemon(settings_for(tmp_path, metrics__enabled=False)) as (daemon, _):
        assert daemon.metrics is None
        assert not [o for o in daemon.events.observers if isinstance(o, Metrics)]
        assert daemon.http_url is not None
        async with httpx2.AsyncClient() as http:
            reply = await http.get(f"{daemon.http_url}/metrics", timeout=10)
    assert reply.status_code == 404


async def test_an_outlier_run_is_flagged_counted_and_shown_in_the_cli_and_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_, **__: None)
    settings = settings_for(tmp_path, anomaly__min_baseline_runs=3,
                            anomaly__median_ratio=1.3)
    async with running_daemon(settings) as (daemon, client):
        steady = [await run_task(client, "look", scenario="steady") for _ in range(3)]
        outlier = await run_task(client, "look", scenario="outlier")

        async def flagged() -> RunSummary | None:
            run = await show(client, outlier.id)
            return run if run.anomalies else None

        run = await wait_for(flagged)
        calm = await show(client, steady[-1].id)
        metrics = await scrape(daemon)
        code = await anyio.to_thread.run_sync(
            main, ["show", outlier.id, "--data-dir", str(tmp_path / "data")])
        async with httpx2.AsyncClient(base_url=str(daemon.http_url), timeout=20) as http:
            await logged_in(http, daemon)
            shown = (await http.get(f"/api/runs/{outlier.id}")).json()
    assert {a["kind"] for a in shown["anomalies"]} == {a.kind for a in run.anomalies}
    kinds = {a.kind for a in run.anomalies}
    assert {"tokens_per_step", "repeated_tool_sequence"} <= kinds
    assert "tokens_per_step" not in {a.kind for a in calm.anomalies}
    assert metrics.value("warden_anomalies_total", kind="tokens_per_step") == 1
    assert metrics.value("warden_anomalies_total", kind="repeated_tool_sequence") == 1
    printed = capsys.readouterr().out
    assert code == 0
    assert "anomaly  tokens_per_step: tokens_per_step" in printed
    assert "anomaly  repeated_tool_sequence: step 0 called list_files → grep 3 times" in printed
