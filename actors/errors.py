"""Errors of the actors package.

The tree::

    ActorError                     root of everything raised by actors/
    ├── ModelError                 a model call failed (``retryable`` says if trying again may help)
    │   ├── ModelRateLimitedError  the provider said 429 / overloaded
    │   ├── ModelUnavailableError  5xx, timeouts, connection failures
    │   └── ModelRequestError      the request itself is wrong (4xx but 429): never retryable
    ├── UnknownModelPriceError     the price table has no entry for a model
    ├── ScriptError                a scripted model's script is missing or malformed
    ├── SandboxUnavailableError    the configured sandbox isolation is not possible here
    └── ToolError                  a tool could not do what was asked
        ├── ToolNotAllowedError    the role's allowlist does not include the tool
        ├── ToolArgumentsError     the arguments do not match the tool's schema
        ├── UnknownToolError       the registry holds no tool of that name
        ├── ToolTimeoutError       the call ran past its deadline and was stopped
        ├── McpServerUnavailableError  the tool's MCP server is down (restarting)
        ├── CheckFailedError       a check tool ran and its verdict is a failure
        ├── WorkspaceEscapeError   a path points outside the run's workspace
        └── SandboxError           the sandboxed process could not be run or was killed

Every error carries ``retryable``: whether the same call, made again unchanged a little
later, may succeed. A ``ToolError`` is an answer for the model (the registry turns it into
a ``ToolCallRecord`` with ``ok=False``), not a crash.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = (
    "ActorError",
    "CheckFailedError",
    "McpServerUnavailableError",
    "ModelError",
    "ModelRateLimitedError",
    "ModelRequestError",
    "ModelUnavailableError",
    "SandboxError",
    "SandboxUnavailableError",
    "ScriptError",
    "ToolArgumentsError",
    "ToolError",
    "ToolNotAllowedError",
    "ToolTimeoutError",
    "UnknownModelPriceError",
    "UnknownToolError",
    "WorkspaceEscapeError",
)


class ActorError(Exception):
    """Root of the actors package's errors; never raised as itself."""

    retryable: bool = False


# -- models -----------------------------------------------------------------------------


class ModelError(ActorError):
    """Raised when a model call failed. ``model`` names it; ``status`` is the HTTP status
    if any; ``retry_after`` the wait in seconds the provider asked for, if it did."""

    def __init__(
        self, model: str, problem: str, *, retryable: bool, status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.model = model
        self.problem = problem
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        where = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"model {model!r} call failed{where}: {problem}")


class ModelRateLimitedError(ModelError):
    """Raised when the provider refused a call for its rate limit or load (429,
    overloaded); retryable."""

    def __init__(
        self, model: str, problem: str, *, status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(model, problem, retryable=True, status=status, retry_after=retry_after)


class ModelUnavailableError(ModelError):
    """Raised when the provider could not answer (5xx, a timeout, a lost connection);
    retryable."""

    def __init__(
        self, model: str, problem: str, *, status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(model, problem, retryable=True, status=status, retry_after=retry_after)


class ModelDeadlineError(ModelError):
    """Raised when a model call passed its request's ``deadline_s`` and was abandoned
    (the HTTP request cancelled, not left running); retryable."""

    def __init__(self, model: str, deadline_s: float) -> None:
        super().__init__(model, f"passed its deadline of {deadline_s:g} s and was cancelled",
                         retryable=True)
        self.deadline_s = deadline_s


class ModelRequestError(ModelError):
    """Raised when the provider refused the request itself (a 4xx other than 429); never
    retryable."""

    def __init__(self, model: str, problem: str, *, status: int | None = None) -> None:
        super().__init__(model, problem, retryable=False, status=status)


class UnknownModelPriceError(ActorError):
    """Raised when the price table has no entry for a model, so its calls cannot be
    budgeted.

    Never retryable: the table is configuration (``[pricing.models."<model>"]``).
    """

    def __init__(self, model: str, as_of: str, known: Sequence[str]) -> None:
        self.model = model
        self.as_of = as_of
        self.known = tuple(known)
        self.retryable = False
        listed = ", ".join(repr(m) for m in self.known) or "none"
        super().__init__(
            f"no price for model {model!r} in the price table as of {as_of} (known: {listed}); "
            f'add [pricing.models."{model}"] to the configuration'
        )


class ScriptError(ActorError):
    """Raised when a script file of the scripted model is missing, is not TOML, or does
    not follow the script schema. ``source`` names the file; never retryable."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"script {source!r}: {problem}")


# -- tools ------------------------------------------------------------------------------


class ToolError(ActorError):
    """Raised when a tool could not do what was asked. ``tool`` names it; the message says
    what was asked and why not."""

    def __init__(self, tool: str, problem: str, *, retryable: bool = False) -> None:
        self.tool = tool
        self.problem = problem
        self.retryable = retryable
        super().__init__(f"tool {tool!r}: {problem}")


class ToolNotAllowedError(ToolError):
    """Raised when a role calls a tool its allowlist does not include."""

    def __init__(self, tool: str, role: str) -> None:
        self.role = role
        super().__init__(tool, f"not in the allowlist of role {role!r}")


class ToolArgumentsError(ToolError):
    """Raised when a call's arguments do not match the tool's schema (or its own checks,
    such as a valid regular expression)."""

    def __init__(self, tool: str, problem: str) -> None:
        super().__init__(tool, f"bad arguments: {problem}")


class UnknownToolError(ToolError):
    """Raised when a registry is asked about a tool it does not hold. ``known`` lists the
    names it does hold, sorted."""

    def __init__(self, tool: str, *, known: Sequence[str]) -> None:
        self.known = tuple(known)
        super().__init__(tool, f"no such tool; known: {list(self.known)!r}")


class ToolTimeoutError(ToolError):
    """Raised when a tool call ran past its deadline and was stopped: the sandbox killed
    its process at ``timeout_s``, or the registry gave up on it ``timeout_s`` after it
    started. The registry records such a call with ``timed_out=True``."""

    def __init__(
        self, tool: str, problem: str, *, timeout_s: float, retryable: bool = False
    ) -> None:
        self.timeout_s = timeout_s
        super().__init__(tool, problem, retryable=retryable)


class McpServerUnavailableError(ToolError):
    """Raised when a tool of an MCP server is called while the server is down (it died
    and is being restarted, ``actors/tools/mcp.py``), or dies during the call: the call
    fails at once, and may succeed later (``retryable``)."""

    def __init__(self, tool: str, server: str, *, stopped: bool = False) -> None:
        self.server = server
        if stopped:  # its sessions were closed: a worker shutting down, or a daemon's list
            super().__init__(tool, f"MCP server {server!r} is stopped in this process")
        else:
            super().__init__(tool, f"MCP server {server!r} is restarting; try again later",
                             retryable=True)


class CheckFailedError(ToolError):
    """Raised by a check tool (``ToolDeclaration.check``, e.g. ``run_tests``) that ran to
    the end and found the work wrong: the registry records the call with ``ok=False``,
    which is what keeps the step from succeeding. ``verdict`` is the tool's report."""

    def __init__(self, tool: str, verdict: str) -> None:
        self.verdict = verdict
        super().__init__(tool, verdict)


class WorkspaceEscapeError(ToolError):
    """Raised when a path given to a tool resolves outside the run's workspace."""

    def __init__(self, tool: str, path: str) -> None:
        self.path = path
        super().__init__(tool, f"path {path!r} is outside the run's workspace")


class SandboxError(ToolError):
    """Raised when a sandboxed process could not be started, or ended in a way that is no
    answer (killed by a signal, or a helper such as grep's search failed)."""


class SandboxUnavailableError(ActorError):
    """Raised when ``sandbox.<key>`` names an isolation this host cannot give (no working
    bubblewrap, not root, no such user): a worker refuses to start rather than run code
    less isolated than configured."""

    def __init__(self, key: str, value: str, problem: str) -> None:
        self.key = key
        self.value = value
        self.problem = problem
        super().__init__(f"sandbox.{key} = {value!r} is not possible here: {problem}")
