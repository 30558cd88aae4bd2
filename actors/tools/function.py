"""Function tools: the user's own Python functions, named in config, as tools.

A ``[tools.<name>]`` table (``config.ToolSettings``) names a sync or async function as
``module:attribute``; ``load_function_tool`` imports it and makes it a tool like warden's
own, with a ``ToolDeclaration`` of the same kind. The contract:

- **schema**: every parameter becomes a field of a msgspec Struct built with
  ``msgspec.defstruct`` (its type hint the field's type, its default the field's
  default; unknown fields forbidden); the Struct's JSON schema, inlined, is the tool's
  ``input_schema``. ``Annotated[int, msgspec.Meta(ge=1, description=...)]`` gives a
  parameter bounds and a description;
- **description**: the function's docstring (``inspect.getdoc``);
- **idempotency key**: a parameter named ``idempotency_key`` is not in the schema; it
  receives the call's key (the same on a replay);
- **arguments** are validated by decoding their JSON into the Struct; a mismatch is a
  ``ToolArgumentsError`` naming the field, and the function is not called;
- **calling**: an async function is awaited; a sync one runs in a worker thread
  (``anyio.to_thread``), abandoned at the deadline (a thread cannot be cancelled: the
  function then finishes unobserved, which is why ``timeout_s`` should be generous and
  a side-effecting function idempotent or reconcilable);
- **deadline**: ``timeout_s`` bounds the call; past it ``ToolTimeoutError`` (``timed_out``
  in the record);
- **output**: a ``str`` is the output as is, ``None`` the empty string, anything else
  its JSON (``msgspec.json``); what cannot be encoded is a ``ToolError``;
- **failures**: an exception raised by the function is a ``ToolError`` the model reads
  (``raised ValueError: amount too large``), not a crash: raising is how a user's
  function says no;
- **config errors**, at start (``supervisor/preflight.py``), each one ``ConfigError``
  naming ``tools.<name>.<key>``: a bad tool name or one of warden's; a module that
  cannot be imported; a missing attribute or one that is not callable; a signature with
  ``*args``, ``**kwargs`` or positional-only parameters; a parameter without a type
  hint or whose type has no JSON schema; no docstring; ``timeout_s`` not above 0.

``reconcile`` and ``simulate`` functions take the same parameters by name (checked at
start) and are called the same way, with the arguments as ``function``'s schema decoded
them; ``reconcile`` answers a ``str`` if the interrupted call acted,
``None`` if it did not.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from functools import partial

import anyio
import msgspec
import structlog
from warden.actors.errors import ToolArgumentsError, ToolError, ToolTimeoutError
from warden.actors.tools.base import ToolContext, input_schema
from warden.bus.wire import ToolSpec
from warden.config import ConfigError, Risk, ToolSettings

__all__ = ("IDEMPOTENCY_KEY", "TOOL_NAME", "FunctionTool", "arguments_struct",
           "load_function_tool")

log = structlog.get_logger("warden.tools")

IDEMPOTENCY_KEY = "idempotency_key"
"""The parameter that receives the call's idempotency key instead of a model argument."""

TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What the Messages API accepts as a tool name."""

_KINDS_REFUSED = {
    inspect.Parameter.VAR_POSITIONAL: "*{} (the model passes arguments by name)",
    inspect.Parameter.VAR_KEYWORD: "**{} (its arguments would have no schema)",
    inspect.Parameter.POSITIONAL_ONLY: "positional-only {} (the model passes arguments by name)",
}


def arguments_struct(name: str, function: Callable[..., object]) -> type[msgspec.Struct]:
    """The Struct of ``function``'s parameters (but ``idempotency_key``), named after the
    tool. Pure. Raises ``ValueError`` saying what in the signature has no schema."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"has no signature: {exc}") from None
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:  # an unresolvable forward reference, of any kind
        raise ValueError(f"has type hints that do not resolve: {exc}") from None
    fields: list[tuple[str, object] | tuple[str, object, object]] = []
    for parameter in signature.parameters.values():
        if parameter.kind in _KINDS_REFUSED:
            raise ValueError("takes " + _KINDS_REFUSED[parameter.kind].format(parameter.name))
        if parameter.name == IDEMPOTENCY_KEY:
            continue
        if parameter.name not in hints:
            raise ValueError(f"parameter {parameter.name!r} has no type hint")
        hint = hints[parameter.name]
        try:
            msgspec.json.schema(hint)
        except (TypeError, ValueError) as exc:
            # msgspec explains at length, over lines; its last line names the type.
            reason = str(exc).strip().splitlines()[-1]
            raise ValueError(f"parameter {parameter.name!r} has an unsupported type: {reason}"
                             ) from None
        if parameter.default is inspect.Parameter.empty:
            fields.append((parameter.name, hint))
        elif isinstance(parameter.default, (list, dict, set)):
            fields.append((parameter.name, hint, msgspec.field(
                default_factory=partial(copy.deepcopy, parameter.default))))
        else:
            fields.append((parameter.name, hint, parameter.default))
    try:
        return msgspec.defstruct(name, fields, kw_only=True, frozen=True,
                                 forbid_unknown_fields=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"has parameters no schema can describe: {exc}") from None


def _wants_key(function: Callable[..., object]) -> bool:
    return IDEMPOTENCY_KEY in inspect.signature(function).parameters


def _is_async(function: Callable[..., object]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None))  # noqa: B004 - a callable object's method


class FunctionTool:
    """A user's function as a tool (the module docstring is its contract). Built by
    ``load_function_tool``; immutable; ``invoke``, ``reconcile`` and ``simulate`` block."""

    check = False

    def __init__(
        self, name: str, function: Callable[..., object], *, description: str,
        risk: Risk = "medium", side_effects: bool = True, idempotent_by_key: bool = False,
        timeout_s: float = 30.0, reconcile: Callable[..., object] | None = None,
        simulate: Callable[..., object] | None = None, trusted_output: bool = True,
    ) -> None:
        self.name = name
        self.function = function
        self.description = description
        self.risk: Risk = risk
        self.side_effects = side_effects
        self.idempotent_by_key = idempotent_by_key
        self.trusted_output = trusted_output
        self.timeout_s: float | None = timeout_s
        self.Arguments = arguments_struct(name, function)
        self._reconcile = reconcile
        self._simulate = simulate
        self._spec = ToolSpec(name=name, description=description,
                              input_schema=input_schema(self.Arguments))

    @property
    def reconciles(self) -> bool:
        return self._reconcile is not None

    @property
    def simulates(self) -> bool:
        return self._simulate is not None

    def spec(self) -> ToolSpec:
        """The tool as the model sees it."""
        return self._spec

    def parse(self, arguments: Mapping[str, object]) -> msgspec.Struct:
        """The arguments decoded as JSON into ``Arguments``; raises ``ToolArgumentsError``
        naming the field."""
        try:
            return msgspec.json.decode(msgspec.json.encode(dict(arguments)), type=self.Arguments)
        except (msgspec.ValidationError, msgspec.EncodeError) as exc:
            raise ToolArgumentsError(self.name, str(exc)) from None

    async def invoke(self, arguments: Mapping[str, object], ctx: ToolContext) -> str:
        """Validate, then call the function under ``timeout_s``; a cancellation point.
        Raises ``ToolArgumentsError``, ``ToolTimeoutError`` or ``ToolError``."""
        output = await self._call(self.function, arguments, ctx)
        return self._output(output)

    async def reconcile(self, arguments: Mapping[str, object], ctx: ToolContext) -> str | None:
        """Whether the interrupted call with ``ctx.idempotency_key`` acted: the
        ``reconcile`` function's answer (``None``: it did not). Raises ``ToolError``."""
        if self._reconcile is None:
            raise ToolError(self.name, "has no reconcile hook")
        answer = await self._call(self._reconcile, arguments, ctx)
        return None if answer is None else self._output(answer)

    async def simulate(self, arguments: Mapping[str, object], ctx: ToolContext) -> str:
        """What a dry run of the call returns: the ``simulate`` function's answer.
        Raises ``ToolError`` (also when the tool has none)."""
        if self._simulate is None:
            raise ToolError(self.name, "has no simulate hook")
        return self._output(await self._call(self._simulate, arguments, ctx))

    async def _call(self, function: Callable[..., object], arguments: Mapping[str, object],
                    ctx: ToolContext) -> object:
        args = self.parse(arguments)
        kwargs = {field: getattr(args, field) for field in args.__struct_fields__}
        if _wants_key(function):
            kwargs[IDEMPOTENCY_KEY] = ctx.idempotency_key
        assert self.timeout_s is not None
        result: object = None
        with anyio.move_on_after(self.timeout_s) as deadline:
            try:
                if _is_async(function):
                    result = await typing.cast(
                        Callable[..., typing.Awaitable[object]], function)(**kwargs)
                else:
                    result = await anyio.to_thread.run_sync(
                        partial(function, **kwargs), abandon_on_cancel=True)
            except ToolError:
                raise
            except Exception as exc:
                log.info("function_tool_raised", tool=self.name, error=repr(exc),
                         run_id=ctx.run_id, step=ctx.step, call_index=ctx.call_index)
                raise ToolError(self.name, f"raised {type(exc).__name__}: {exc}") from exc
        if deadline.cancelled_caught:
            raise ToolTimeoutError(self.name, f"did not finish within {self.timeout_s:g} s",
                                   timeout_s=self.timeout_s, retryable=True)
        return result

    def _output(self, value: object) -> str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        try:
            return msgspec.json.encode(value).decode()
        except (TypeError, msgspec.EncodeError) as exc:
            raise ToolError(self.name, f"returned a {type(value).__name__} that is not "
                                       f"JSON: {exc}") from None


def _resolve(name: str, key: str, target: str) -> Callable[..., object]:
    """The callable ``target`` (``module:attribute``) names, imported now. Raises
    ``ConfigError`` naming ``tools.<name>.<key>``."""
    where = f"tools.{name}.{key}"
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(where, target, "must be 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import may raise anything; each is this one mistake
        first = (str(exc).strip().splitlines() or [""])[0]  # the error is one line
        raise ConfigError(where, target, f"cannot import module {module_name!r}: "
                                         f"{type(exc).__name__}: {first}") from None
    found: object = module
    for part in attribute.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ConfigError(where, target, f"module {module_name!r} has no {attribute!r}")
    if not callable(found):
        raise ConfigError(where, target, f"{attribute!r} is a {type(found).__name__}, "
                                         "not a function")
    return typing.cast(Callable[..., object], found)


def load_function_tool(name: str, settings: ToolSettings, *,
                       reserved: frozenset[str] = frozenset()) -> FunctionTool:
    """The tool ``[tools.<name>]`` describes, its functions imported now (so in the
    process that will call them). ``reserved``: names taken by warden's own tools.

    Blocks on the imports. Raises ``ConfigError`` naming ``tools.<name>.<key>`` (the
    module docstring lists the mistakes)."""
    if not TOOL_NAME.fullmatch(name):
        raise ConfigError(f"tools.{name}", name, "a tool name is 1-64 letters, digits, _ or -")
    if name in reserved:
        raise ConfigError(f"tools.{name}", name, "is the name of one of warden's own tools")
    if not settings.timeout_s > 0:
        raise ConfigError(f"tools.{name}.timeout_s", settings.timeout_s, "must be greater than 0")
    function = _resolve(name, "function", settings.function)
    description = inspect.getdoc(function)
    if not description:
        raise ConfigError(f"tools.{name}.function", settings.function,
                          "has no docstring (the model reads it as the tool's description)")
    hooks: dict[str, Callable[..., object] | None] = {}
    names: set[str] = set()
    for key in ("function", "reconcile", "simulate"):
        target = getattr(settings, key)
        hooks[key] = None if target is None else _resolve(name, key, target)
        if hooks[key] is None:
            continue
        try:
            struct = arguments_struct(name, typing.cast(Callable[..., object], hooks[key]))
        except ValueError as exc:
            raise ConfigError(f"tools.{name}.{key}", target, str(exc)) from None
        if key == "function":
            names = set(struct.__struct_fields__)
        elif set(struct.__struct_fields__) != names:
            raise ConfigError(f"tools.{name}.{key}", target,
                              f"must take the parameters of {settings.function!r}: "
                              f"{', '.join(sorted(names))}")
    return FunctionTool(
        name, function, description=description, risk=settings.risk,
        side_effects=settings.side_effects, idempotent_by_key=settings.idempotent_by_key,
        timeout_s=settings.timeout_s, reconcile=hooks["reconcile"], simulate=hooks["simulate"],
        trusted_output=settings.trusted_output,
    )
