// warden's dashboard: plain JavaScript, no build step (supervisor/dashboard.py).
// Everything shown is data from /api/... and goes on the page as text (textContent,
// createTextNode): never as markup. Prompts, tool output and task text are untrusted.
"use strict";

const STATUSES = ["queued", "planning", "running", "awaiting_approval", "succeeded", "failed",
  "needs_human", "cancelled", "budget_exhausted", "rejected"];
let csrf = "";
let current = { tab: "runs", runId: null };
let filters = { status: "", q: "" };
let refreshTimer = null;

// The API leaves out fields at their defaults (the wire's omit_defaults): put them back.
const DEFAULTS = {
  run: { tokens: 0, cost_usd: 0, steps: [], error: null, result: null, scenario: null },
  step: { turns: 0, output: "", tokens: 0, cost_usd: 0 },
  call: { step: null, turn: null, purpose: "", ok: true, input_tokens: 0, output_tokens: 0,
    cache_read_tokens: 0, cache_creation_tokens: 0, cost_usd: 0, duration_ms: 0, cut: false },
  approval: { status: "pending", decided_by: null, reason: null },
};
const filled = (kind, value) => Object.assign({}, DEFAULTS[kind], value);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options = {}) {
  const headers = Object.assign({ "Accept": "application/json" }, options.headers || {});
  if (options.method === "POST") {
    headers["Content-Type"] = "application/json";
    headers["X-Warden-CSRF"] = csrf;
  }
  const reply = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  if (reply.status === 401) { window.location.assign("/login"); throw new Error("logged out"); }
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || ("HTTP " + reply.status));
  return body;
}

const usd = (value) => "$" + Number(value || 0).toFixed(value >= 1 ? 2 : 6);
const when = (seconds) => seconds ? new Date(seconds * 1000).toLocaleString() : "";
const badge = (status) => el("span", { class: "status " + status }, status);
const view = () => document.getElementById("view");

function show(...nodes) {
  // Nodes only: strings were made text nodes by el(); null and false are left out.
  view().replaceChildren(...nodes.flat(Infinity).filter((node) => node instanceof Node));
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

// -- runs ------------------------------------------------------------------------------

async function renderRuns() {
  const params = new URLSearchParams({ limit: "100" });
  if (filters.status) params.set("status", filters.status);
  if (filters.q) params.set("q", filters.q);
  const runs = (await api("/api/runs?" + params)).runs.map((r) => filled("run", r));
  const status = el("select", { id: "filter-status", onchange: (e) => { filters.status = e.target.value; renderRuns(); } },
    el("option", { value: "" }, "every status"),
    STATUSES.map((s) => el("option", { value: s }, s)));
  status.value = filters.status;
  const search = el("input", { id: "filter-q", type: "search", placeholder: "id or text", value: filters.q });
  search.addEventListener("change", (e) => { filters.q = e.target.value; renderRuns(); });
  const rows = runs.map((run) => el("tr", { dataset: { run: run.id } },
    el("td", {}, el("a", { href: "#/run/" + encodeURIComponent(run.id), class: "run-link" }, run.id)),
    el("td", {}, badge(run.status)),
    el("td", { class: "text" }, run.text),
    el("td", { class: "num" }, run.tokens),
    el("td", { class: "num" }, usd(run.cost_usd)),
    el("td", { class: "meta" }, when(run.updated_at))));
  show(el("h2", {}, "Runs"),
    el("div", { class: "filters" }, status, search),
    runs.length ? el("table", { id: "runs" },
      el("thead", {}, el("tr", {}, ["Run", "Status", "Task", "Tokens", "Cost", "Updated"].map(
        (h, i) => el("th", { class: i === 3 || i === 4 ? "num" : null }, h)))),
      el("tbody", {}, rows)) : el("p", { class: "empty" }, "No runs match."));
}

// -- one run ---------------------------------------------------------------------------

function callNode(call) {
  const refused = call.kind === "tool" && !call.ok;
  const title = call.kind === "model"
    ? `model ${call.name} · ${call.purpose || "call"} · in ${call.input_tokens} / out ${call.output_tokens}` +
      (call.cache_read_tokens + call.cache_creation_tokens ? ` / cache ${call.cache_read_tokens + call.cache_creation_tokens}` : "") +
      ` tokens · ${usd(call.cost_usd)} · ${Math.round(call.duration_ms)} ms`
    : `tool ${call.name} · ${call.ok ? "ran" : "refused or failed"} · ${Math.round(call.duration_ms)} ms`;
  const where = call.step === null || call.step === undefined ? "" : `step ${call.step}` +
    (call.turn === null || call.turn === undefined ? "" : `, turn ${call.turn}`);
  return el("details", { class: `call ${call.kind}` + (refused ? " refused" : "") },
    el("summary", {}, title, " ", el("span", { class: "meta" }, where)),
    el("div", { class: "meta" }, call.kind === "model" ? "prompt (new messages)" : "arguments"),
    el("pre", { class: "request" }, pretty(call.request)),
    el("div", { class: "meta" }, call.kind === "model" ? "response" :
      (call.ok ? "output" : "output (the policy decision or failure the model read)")),
    el("pre", { class: "response" }, pretty(call.response)),
    call.cut ? el("div", { class: "meta" }, "cut here: warden show RUN --calls prints it whole") : null);
}

function decisionButtons(approval, after) {
  const reason = el("input", { type: "text", placeholder: "reason (required to deny)", class: "reason" });
  const message = el("span", { class: "message" });
  const act = (verdict) => async () => {
    message.textContent = "";
    try {
      await api(`/api/approvals/${encodeURIComponent(approval.id)}/${verdict}`,
        { method: "POST", body: JSON.stringify({ reason: reason.value }) });
      after();
    } catch (error) { message.textContent = error.message; }
  };
  return el("div", { class: "decide" }, reason, " ",
    el("button", { type: "button", class: "approve", onclick: act("approve") }, "Approve"), " ",
    el("button", { type: "button", class: "deny", onclick: act("deny") }, "Deny"), " ", message);
}

function approvalNode(approval, decidable) {
  return el("div", { class: "card approval", dataset: { approval: approval.id } },
    el("div", {}, el("strong", {}, approval.tool), " ", badge(approval.status || "pending"), " ",
      el("span", { class: "meta" }, `risk ${approval.risk} · step ${approval.step} · run `),
      el("a", { href: "#/run/" + encodeURIComponent(approval.run_id) }, approval.run_id)),
    el("div", { class: "meta" }, "why: ", approval.why),
    el("pre", {}, JSON.stringify(approval.arguments, null, 2)),
    el("div", { class: "meta" }, `id ${approval.id} · hash ${approval.hash}` +
      (approval.expires_at && (approval.status || "pending") === "pending" ? ` · expires ${when(approval.expires_at)}` : "") +
      (approval.decided_by ? ` · decided by ${approval.decided_by}` : "") +
      (approval.reason ? ` · reason: ${approval.reason}` : "")),
    decidable ? decisionButtons(approval, refresh) : null);
}

async function renderRun(runId) {
  const detail = await api("/api/runs/" + encodeURIComponent(runId));
  const run = filled("run", detail.run);
  run.steps = run.steps.map((s) => filled("step", s));
  detail.calls = detail.calls.map((c) => filled("call", c));
  detail.approvals = detail.approvals.map((a) => filled("approval", a));
  const facts = el("div", { class: "facts" },
    el("div", {}, el("span", {}, "status"), badge(run.status)),
    el("div", {}, el("span", {}, "tokens"), el("b", { id: "run-tokens" }, run.tokens)),
    el("div", {}, el("span", {}, "cost"), el("b", { id: "run-cost" }, usd(run.cost_usd))),
    el("div", {}, el("span", {}, "created"), when(run.created_at)),
    el("div", {}, el("span", {}, "updated"), when(run.updated_at)));
  const anomalies = Array.isArray(detail.anomalies) && detail.anomalies.length
    ? el("div", { class: "card anomalies", id: "anomalies" }, el("h3", {}, "Anomalies"),
        el("ul", {}, detail.anomalies.map((a) => el("li", {},
          typeof a === "string" ? a : [a.kind || a.name || "", " ", a.detail || a.message || JSON.stringify(a)]))))
    : null;
  const steps = run.steps.map((step) => el("div", { class: "card step" },
    el("div", {}, el("strong", {}, `Step ${step.index} · ${step.role}`), " ", badge(step.status),
      el("span", { class: "meta" }, ` ${step.turns} turns · ${step.tokens} tokens · ${usd(step.cost_usd)}`)),
    el("div", { class: "meta" }, step.instruction),
    step.output ? el("pre", {}, step.output) : null,
    detail.calls.filter((c) => c.step === step.index).map(callNode)));
  const other = detail.calls.filter((c) => c.step === null || c.step === undefined ||
    !run.steps.some((s) => s.index === c.step));
  show(el("h2", {}, "Run ", el("code", { id: "run-id" }, run.id)),
    el("div", { class: "card", id: "run-facts", dataset: { status: run.status } }, facts,
      el("h3", {}, "Task"), el("pre", { id: "run-text" }, run.text),
      run.error ? [el("h3", {}, "Error"), el("pre", { class: "message" }, run.error)] : null,
      run.result ? [el("h3", {}, "Result"), el("pre", { id: "run-result" }, run.result)] : null),
    anomalies,
    detail.approvals.length ? [el("h3", {}, "Approvals"),
      detail.approvals.map((a) => approvalNode(a, a.status === "pending"))] : null,
    detail.plan ? [el("h3", {}, "Plan"), el("pre", { id: "run-plan" }, pretty(detail.plan))] : null,
    other.length ? [el("h3", {}, "Planning and synthesis calls"), other.map(callNode)] : null,
    el("h3", {}, "Steps"), steps.length ? steps : el("p", { class: "empty" }, "No step yet."));
}

// -- approvals, costs, breakers --------------------------------------------------------

async function renderApprovals() {
  const approvals = (await api("/api/approvals")).approvals.map((a) => filled("approval", a));
  updateCount(approvals.length);
  show(el("h2", {}, "Approval queue"),
    approvals.length ? el("div", { id: "approvals" }, approvals.map((a) => approvalNode(a, true)))
      : el("p", { class: "empty" }, "Nothing waits for a decision."));
}

async function renderCosts() {
  const { rows, days } = await api("/api/costs?days=14");
  const byDay = new Map();
  for (const row of rows) byDay.set(row.day, (byDay.get(row.day) || 0) + row.cost_usd);
  show(el("h2", {}, `Cost per day and model (last ${days} days, UTC)`),
    rows.length ? el("table", { id: "costs" },
      el("thead", {}, el("tr", {}, ["Day", "Model", "Calls", "Input", "Output", "Cache", "Cost", "Day total"].map(
        (h, i) => el("th", { class: i >= 2 ? "num" : null }, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {},
        el("td", {}, r.day), el("td", {}, r.model), el("td", { class: "num" }, r.calls),
        el("td", { class: "num" }, r.input_tokens), el("td", { class: "num" }, r.output_tokens),
        el("td", { class: "num" }, r.cache_tokens), el("td", { class: "num" }, usd(r.cost_usd)),
        el("td", { class: "num" }, usd(byDay.get(r.day)))))))
      : el("p", { class: "empty" }, "No model call in this period."));
}

async function renderBreakers() {
  const { breakers } = await api("/api/breakers");
  show(el("h2", {}, "Circuit breakers"),
    el("table", { id: "breakers" },
      el("thead", {}, el("tr", {}, ["Breaker", "State", "Consecutive failures", "Times opened", "Calls rejected"].map(
        (h, i) => el("th", { class: i >= 2 ? "num" : null }, h)))),
      el("tbody", {}, breakers.map((b) => el("tr", {},
        el("td", {}, b.name), el("td", {}, badge(b.state)),
        el("td", { class: "num" }, b.consecutive_failures), el("td", { class: "num" }, b.times_opened),
        el("td", { class: "num" }, b.calls_rejected))))));
}

function updateCount(count) {
  document.getElementById("approval-count").textContent = count ? String(count) : "";
}

// -- routing and live updates ----------------------------------------------------------

function route() {
  const hash = window.location.hash || "#/runs";
  const [, tab, ...rest] = hash.split("/");
  current = { tab: tab || "runs", runId: tab === "run" ? decodeURIComponent(rest.join("/")) : null };
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", link.dataset.tab === (current.tab === "run" ? "runs" : current.tab));
  }
  return refresh();
}

async function refresh() {
  try {
    switch (current.tab) {
      case "run": await renderRun(current.runId); break;
      case "approvals": await renderApprovals(); break;
      case "costs": await renderCosts(); break;
      case "breakers": await renderBreakers(); break;
      default: await renderRuns();
    }
    if (current.tab !== "approvals") {
      api("/api/approvals").then((r) => updateCount(r.approvals.length)).catch(() => {});
    }
  } catch (error) {
    show(el("p", { class: "message" }, error.message));
  }
}

function scheduleRefresh() {
  // Events come in bursts (a turn, its step, the status): one refresh per burst.
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 150);
}

function listen() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.kind === "resync" || current.tab !== "run" || event.run_id === current.runId) {
      scheduleRefresh();
    }
  };
}

async function start() {
  const session = await api("/api/session");
  csrf = session.csrf;
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/logout", { method: "POST", body: "{}" }).catch(() => {});
    window.location.assign("/login");
  });
  window.addEventListener("hashchange", route);
  listen();
  await route();
}

start();
