"""The actors: the actor base, the worker actors, their tools and sandbox, model clients.

``AnthropicModel`` is imported lazily (``actors.anthropic_model``) so that the scripted
path never loads the SDK.
"""

from __future__ import annotations

from warden.actors.actor import Actor
from warden.actors.errors import (
    ActorError,
    CheckFailedError,
    McpServerUnavailableError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnavailableError,
    SandboxError,
    SandboxUnavailableError,
    ScriptError,
    ToolArgumentsError,
    ToolError,
    ToolNotAllowedError,
    ToolTimeoutError,
    UnknownModelPriceError,
    UnknownToolError,
    WorkspaceEscapeError,
)
from warden.actors.model import Model, ModelReply, ModelRequest
from warden.actors.model_factory import build_model
from warden.actors.pricing import PriceTable
from warden.actors.sandbox import SandboxResult, run_sandboxed
from warden.actors.scripted_model import ScriptedModel, load_scripts
from warden.actors.tools import (
    FunctionTool,
    Tool,
    ToolBase,
    ToolContext,
    ToolDeclaration,
    ToolRegistry,
    default_registry,
    registry_for,
)
from warden.actors.worker import Worker
from warden.actors.workspace import Workspace

__all__ = (
    "Actor",
    "ActorError",
    "CheckFailedError",
    "FunctionTool",
    "McpServerUnavailableError",
    "Model",
    "ModelError",
    "ModelRateLimitedError",
    "ModelReply",
    "ModelRequest",
    "ModelRequestError",
    "ModelUnavailableError",
    "PriceTable",
    "SandboxError",
    "SandboxResult",
    "SandboxUnavailableError",
    "ScriptError",
    "ScriptedModel",
    "Tool",
    "ToolArgumentsError",
    "ToolBase",
    "ToolContext",
    "ToolDeclaration",
    "ToolError",
    "ToolNotAllowedError",
    "ToolRegistry",
    "ToolTimeoutError",
    "UnknownModelPriceError",
    "UnknownToolError",
    "Worker",
    "Workspace",
    "WorkspaceEscapeError",
    "build_model",
    "default_registry",
    "load_scripts",
    "registry_for",
    "run_sandboxed",
)
