"""``warden show RUN --calls``: every prompt, response and tool call of a run, with its
tokens, cost and timing (issue 11, point 4).

From the daemon, the calls come a page at a time (the API's ``calls`` verb, operator
identity: prompts and tool outputs are what a run's summary leaves out); with no daemon
running, from the journal file. Printed in the order they were recorded: each model call
with its purpose, model, usage, cost and latency, what it sent (the messages new since the
step's previous call) and what came back; each tool call with its arguments, whether it
succeeded, its duration and its output. ``--json`` prints one JSON object per call.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable

from warden.bus.wire import CallsQuery, CallView, RunCalls, encoder

__all__ = ("all_calls", "print_calls")

Fetch = Callable[[CallsQuery], Awaitable[object]]
"""Sends one ``CallsQuery`` to the daemon; its reply."""

_INDENT = "      "


async def all_calls(run_id: str, fetch: Fetch) -> list[CallView]:
    """Every call of the run, page after page. Raises ``TypeError`` on a reply that is
    not a page."""
    calls: list[CallView] = []
    after: int | None = 0
    while after is not None:
        page = await fetch(CallsQuery(run_id=run_id, after=after))
        if not isinstance(page, RunCalls):
            raise TypeError(f"the daemon answered a calls request with {page!r}")
        calls.extend(page.calls)
        after = page.next
    return calls


def print_calls(calls: Iterable[CallView], *, as_json: bool) -> None:
    """Print ``calls``: one JSON object per line, or a readable block per call."""
    count = 0
    for call in calls:
        count += 1
        if as_json:
            print(encoder.encode(call).decode())
            continue
        where = "" if call.step is None else f"step {call.step} turn {call.turn}  "
        if call.kind == "model":
            usage = (f"{call.input_tokens} in / {call.output_tokens} out"
                     + (f" / {call.cache_read_tokens} cache read" if call.cache_read_tokens
                        else "")
                     + (f" / {call.cache_creation_tokens} cache write"
                        if call.cache_creation_tokens else ""))
            print(f"[{count}] model {call.name} ({call.purpose})  {where}{usage} tokens  "
                  f"${call.cost_usd:.4f}  {call.duration_ms:.0f} ms")
            print(f"    sent:\n{_block(call.request)}")
            print(f"    got:\n{_block(call.response)}")
        else:
            outcome = "ok" if call.ok else "FAILED or refused"
            print(f"[{count}] tool {call.name}  {where}{outcome}  {call.duration_ms:.0f} ms")
            print(f"    arguments: {call.request}")
            print(f"    output:\n{_block(call.response, json_text=False)}")
        if call.cut:
            print(f"{_INDENT}(cut to fit one reply: `warden show` on the daemon's machine, "
                  "without a daemon running, reads it whole)")
    if not as_json:
        print(f"{count} calls")


def _block(text: str, *, json_text: bool = True) -> str:
    """``text`` indented; JSON pretty-printed when it is JSON."""
    if json_text:
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    return "\n".join(_INDENT + line for line in text.splitlines() or [""])
