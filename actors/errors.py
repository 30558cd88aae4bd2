"""Errors of the actors package.

The tree::

    ActorError                     root of everything raised by actors/
    ├── ModelError                 a model call failed (``retryable`` says if trying again may help)
    │   ├── ModelRateLimitedError  the provider said 429 / overloaded
    │   ├── ModelUnavailableError  5xx, timeouts, connection failures
    │   └── ModelRequestError      the request itself is wrong (4xx but 429): never retryable
    └── ToolError                  a tool could not do what was asked
        ├── ToolNotAllowedError    the role's allowlist does not include the tool
        ├── ToolArgumentsError     the arguments do not match the tool's schema
        ├── WorkspaceEscapeError   a path points outside the run's workspace
        └── SandboxError           the sandboxed process could not be run or was killed
"""

from __future__ import annotations


class ActorError(Exception):
    """Root of the actors package's errors."""

    retryable: bool = False


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
    def __init__(
        self, model: str, problem: str, *, status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(model, problem, retryable=True, status=status, retry_after=retry_after)


class ModelUnavailableError(ModelError):
    def __init__(
        self, model: str, problem: str, *, status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(model, problem, retryable=True, status=status, retry_after=retry_after)


class ModelRequestError(ModelError):
    def __init__(self, model: str, problem: str, *, status: int | None = None) -> None:
        super().__init__(model, problem, retryable=False, status=status)


class ToolError(ActorError):
    """A tool failed. ``tool`` names it; the message says what was asked and why not."""

    def __init__(self, tool: str, problem: str, *, retryable: bool = False) -> None:
        self.tool = tool
        self.problem = problem
        self.retryable = retryable
        super().__init__(f"tool {tool!r}: {problem}")


class ToolNotAllowedError(ToolError):
    def __init__(self, tool: str, role: str) -> None:
        self.role = role
        super().__init__(tool, f"not in the allowlist of role {role!r}")


class ToolArgumentsError(ToolError):
    def __init__(self, tool: str, problem: str) -> None:
        super().__init__(tool, f"bad arguments: {problem}")


class WorkspaceEscapeError(ToolError):
    def __init__(self, tool: str, path: str) -> None:
        self.path = path
        super().__init__(tool, f"path {path!r} is outside the run's workspace")


class SandboxError(ToolError):
    pass
