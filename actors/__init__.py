"""The actors: the actor base, the worker actors, their tools and sandbox, model clients.

``AnthropicModel`` is imported lazily (``actors.anthropic_model``) so that the scripted
path never loads the SDK.
"""

from __future__ import annotations

from warden.actors.actor import Actor
from warden.actors.errors import (
    ActorError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnavailableError,
    SandboxError,
    ToolArgumentsError,
    ToolError,
    ToolNotAllowedError,
    WorkspaceEscapeError,
)
from warden.actors.model import Model, ModelReply, ModelRequest, build_model
from warden.actors.pricing import PriceTable, UnknownModelPriceError
from warden.actors.sandbox import SandboxResult, run_sandboxed
from warden.actors.scripted_model import ScriptedModel, ScriptError, load_scripts
from warden.actors.tools import Tool, ToolBase, ToolContext, ToolRegistry, default_registry
from warden.actors.worker import Worker
from warden.actors.workspace import Workspace

__all__ = [
    "Actor",
    "ActorError",
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
    "ScriptError",
    "ScriptedModel",
    "Tool",
    "ToolArgumentsError",
    "ToolBase",
    "ToolContext",
    "ToolError",
    "ToolNotAllowedError",
    "ToolRegistry",
    "UnknownModelPriceError",
    "Worker",
    "Workspace",
    "WorkspaceEscapeError",
    "build_model",
    "default_registry",
    "load_scripts",
    "run_sandboxed",
]
