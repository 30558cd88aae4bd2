"""A fake OpenAI-compatible Chat Completions API for the tests: a real HTTP server on
127.0.0.1, as vLLM, Ollama or llama.cpp's server would be.

``ChatCompletionsAPI`` is ``messages_api.MessagesAPI``'s stdlib ``ThreadingHTTPServer`` on
an OS-chosen port, served from a thread, with its records, speaking enough of
``POST /v1/chat/completions`` for a whole warden run through the official ``openai`` SDK:

- the kind of a request is read from its system message as ``messages_api`` does:
  **plan** calls are answered with the JSON plan given at construction, **synth** calls
  with a short result, **step** turns by the ``steps`` script: the step's n-th turn (n =
  the assistant messages so far) calls the n-th tool of the script if the request offers
  it (``finish_reason: tool_calls``, arguments as JSON text, or as given when a string:
  a model that writes bad JSON), and once the script is done answers ``step_text``
  (``finish_reason: stop``);
- every answer carries ``usage`` as OpenAI counts it: ``prompt_tokens`` (the request's
  JSON length / 4) of which ``prompt_tokens_details.cached_tokens`` are the longest prefix
  (tools, then messages, cut at a message boundary) an earlier request already sent,
  which is how OpenAI's automatic prefix cache reads; no minimum length, no expiry;
- ``messages_api``'s policies decide between ``Answer`` (optionally held) and ``Refuse``
  (an error status with OpenAI's error body ``{"error": {"message", "type", "code"}}``,
  ``code`` from ``Refuse.error_code``, and a ``retry-after`` header);
- every request is recorded with its body and its ``Authorization`` header.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.integration.messages_api import (
    _ROLE_IN_PROMPT,
    LEAD_PREFIX,
    PLANNER_PREFIX,
    Kind,
    MessagesAPI,
    Policy,
    Refuse,
    Request,
)

__all__ = ("ChatCompletionsAPI", "Received", "ToolCall")

_HOLD_POLL_S = 0.02


@dataclass(frozen=True)
class ToolCall:
    """One scripted tool call of a step turn: ``arguments`` a dict (sent as JSON) or the
    raw text to send."""

    name: str
    arguments: Mapping[str, object] | str


@dataclass
class Received:
    """A request and the headers it came with."""

    request: Request
    authorization: str | None


class ChatCompletionsAPI(MessagesAPI):
    """The fake Chat Completions API (module docstring): ``MessagesAPI``'s server, policies
    and records, speaking the other API. Thread-safe to read from tests."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        plan: Sequence[tuple[str, str]] = (("research", "Look at the workspace and report."),),
        steps: Sequence[ToolCall] = (),
        step_text: str = "The workspace is inspected; nothing else to report.",
        synthesis: str = "Done: the workspace was inspected.",
        served_model: str | None = None,
    ) -> None:
        super().__init__(policy, plan=plan, step_text=step_text, synthesis=synthesis)
        self.steps = list(steps)
        self.served_model = served_model
        self._authorizations: dict[int, str | None] = {}
        self._seen: set[str] = set()  # digests of every prefix sent so far

    @property
    def url(self) -> str:
        """The base URL to give the SDK (``models.openai_base_url``), up to ``/v1``."""
        return f"{super().url}/v1"

    def __enter__(self) -> ChatCompletionsAPI:
        self.start()
        return self

    @property
    def received(self) -> list[Received]:
        """Every request so far with its ``Authorization``, in order of arrival."""
        with self._lock:
            return [Received(r, self._authorizations.get(r.index)) for r in self._requests]

    # -- serving ------------------------------------------------------------------------

    def _record(self, body: dict[str, Any]) -> Request:
        messages = body.get("messages") or []
        system = next((str(m.get("content") or "") for m in messages
                       if m.get("role") == "system"), "")
        kind: Kind = ("plan" if system.startswith(PLANNER_PREFIX)
                      else "synth" if system.startswith(LEAD_PREFIX) else "step")
        role = _ROLE_IN_PROMPT.match(system)
        task = next((str(m.get("content") or "") for m in messages if m.get("role") == "user"),
                    "").split("\n", 1)[0].removeprefix("Task: ")
        with self._lock:
            request = Request(
                index=len(self._requests), kind=kind,
                role=role.group(1) if kind == "step" and role else None,
                system=system[:80], task=task, arrived_at=time.monotonic(), body=body,
            )
            self._requests.append(request)
        return request

    def _usage(self, body: dict[str, Any]) -> tuple[int, int]:
        """``(prompt tokens, cached tokens)`` of a request (module docstring)."""
        digest = hashlib.sha256()
        size = 0
        prefixes: list[tuple[str, int]] = []
        for segment in [*(body.get("tools") or []), *(body.get("messages") or [])]:
            text = json.dumps(segment, sort_keys=True)
            digest.update(text.encode())
            size += max(1, len(text) // 4)
            prefixes.append((digest.hexdigest(), size))
        with self._lock:
            cached = max((tokens for key, tokens in prefixes if key in self._seen), default=0)
            self._seen.update(key for key, _ in prefixes)
        return max(1, size), cached

    def _message(self, request: Request) -> tuple[dict[str, object], str]:
        """The assistant message of an answer, and its finish reason."""
        if request.kind != "step":
            return {"role": "assistant", "content": self._answer_text(request.kind)}, "stop"
        body: Any = request.body
        turn = sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")
        offered = {t["function"]["name"] for t in body.get("tools") or []}
        if turn < len(self.steps) and self.steps[turn].name in offered:
            call = self.steps[turn]
            arguments = (call.arguments if isinstance(call.arguments, str)
                         else json.dumps(dict(call.arguments)))
            return {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{request.index:04d}", "type": "function",
                "function": {"name": call.name, "arguments": arguments}}]}, "tool_calls"
        return {"role": "assistant", "content": self.step_text}, "stop"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path.split("?", 1)[0] != "/v1/chat/completions":
                    self._send(404, _error("not_found", f"no route {self.path}", None))
                    return
                body = json.loads(raw) if raw else {}
                request = api._record(body)
                with api._lock:
                    api._authorizations[request.index] = self.headers.get("authorization")
                reply = api.policy(request)
                if isinstance(reply, Refuse):
                    self._hold(reply.latency_s)
                    headers = {"retry-after": reply.retry_after} if reply.retry_after else {}
                    self._send(reply.status, _error(reply.error_type, reply.message,
                                                    reply.error_code), headers)
                    request.status = reply.status
                    return
                self._hold(reply.hold_s)
                message, finish = api._message(request)
                prompt, cached = api._usage(body)
                content = message.get("content") or json.dumps(message.get("tool_calls"))
                completion = max(1, len(str(content)) // 4)
                self._send(200, {
                    "id": f"chatcmpl-{request.index:04d}", "object": "chat.completion",
                    "created": int(time.time()),
                    "model": api.served_model or str(body.get("model")),
                    "choices": [{"index": 0, "message": message, "finish_reason": finish,
                                 "logprobs": None}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion,
                              "prompt_tokens_details": {"cached_tokens": cached}},
                })
                request.status = 200
                request.answered_at = time.monotonic()
                request.billed_tokens = prompt + completion

            def _hold(self, seconds: float) -> None:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and not api._stopping.is_set():
                    api._stopping.wait(min(_HOLD_POLL_S, max(0.0, deadline - time.monotonic())))

            def _send(self, status: int, payload: object,
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.send_header("x-request-id", f"req_fake_{status}")
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except OSError:
                    pass  # the client went (a test's deadline): nothing to deliver to

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def _error(kind: str, message: str, code: str | None) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
