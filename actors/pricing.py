"""What model calls cost, in US dollars, from the configured price table.

Two questions are asked of prices. *Before* a call: what is the most it can cost
(``worst_case``), so the run's budget can reserve that much and refuse a call that could
overrun it. *After* a call: what did it cost (``cost``), from the usage the provider
reported, so the reservation can be settled.

Prices are per million tokens, one rate per kind of token: input, output, cache write
(``cache_creation_input_tokens``) and cache read (``cache_read_input_tokens``). A model
missing from the table is an error (``UnknownModelPriceError``), never a free call.

A dated snapshot id (``claude-sonnet-4-5-20250929``) without an entry of its own is priced
as its alias (``claude-sonnet-4-5``): a request for an alias is answered by a snapshot, and
the reply names the snapshot, so settling a call by ``ModelReply.model`` must find it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec
from warden.actors.errors import UnknownModelPriceError
from warden.bus.wire import Message, ToolSpec, Usage
from warden.config.settings import PriceEntry, PricingSettings

__all__ = ("PriceTable",)

_PER_MTOK = 1_000_000.0

_SNAPSHOT_DATE = re.compile(r"-\d{8}$")

BYTES_PER_TOKEN = 3
"""Divisor of the prompt estimate. English prose runs about 4 bytes per token in Claude's
tokenizer and code about 3; dividing by 3 (rounding up) over-counts both, and the JSON
encoding we measure adds quotes, keys and escapes on top."""

MESSAGE_OVERHEAD_TOKENS = 8
"""Added per message for the role markers and turn separators the API wraps it in."""

TOOLS_OVERHEAD_TOKENS = 500
"""Added once when tools are offered: the API prepends a tool-use system prompt (documented
at 300-350 tokens, depending on the model and ``tool_choice``)."""

BASE_OVERHEAD_TOKENS = 16
"""Added once per call for the framing of the prompt itself."""


class PriceTable:
    """Prices of the configured models, as of ``PricingSettings.as_of``.

    Immutable after construction; every method is pure and non-blocking.
    """

    def __init__(self, settings: PricingSettings) -> None:
        self._as_of = settings.as_of
        self._prices: dict[str, PriceEntry] = dict(settings.models)

    @property
    def as_of(self) -> str:
        """The date the prices were taken from the provider's price list (YYYY-MM-DD)."""
        return self._as_of

    @property
    def models(self) -> tuple[str, ...]:
        """The models the table prices, sorted."""
        return tuple(sorted(self._prices))

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self._lookup(model) is not None

    def price(self, model: str) -> PriceEntry:
        """The price entry of ``model``, or of its alias if it is a dated snapshot id.

        Raises ``UnknownModelPriceError``.
        """
        entry = self._lookup(model)
        if entry is None:
            raise UnknownModelPriceError(model, self._as_of, self.models)
        return entry

    def _lookup(self, model: str) -> PriceEntry | None:
        entry = self._prices.get(model)
        if entry is None:
            entry = self._prices.get(_SNAPSHOT_DATE.sub("", model))
        return entry

    def cost(self, model: str, usage: Usage) -> float:
        """What a call cost, in USD, from the usage the provider reported.

        Each kind of token is priced at its own rate. Raises ``UnknownModelPriceError``.
        """
        p = self.price(model)
        return (
            usage.input_tokens * p.input_per_mtok
            + usage.output_tokens * p.output_per_mtok
            + usage.cache_creation_input_tokens * p.cache_write_per_mtok
            + usage.cache_read_input_tokens * p.cache_read_per_mtok
        ) / _PER_MTOK

    def worst_case(self, model: str, prompt_tokens: int, max_tokens: int) -> float:
        """The most a call with a prompt of ``prompt_tokens`` and ``max_tokens`` can cost, in USD.

        ``max_tokens`` is priced as output. Each prompt token is billed as exactly one of
        input, cache write or cache read, so it is priced at the dearest of those three
        rates (cache writes cost more than plain input): whatever the provider's caching
        does, ``cost`` of the call's usage is at most this, provided the prompt has at most
        ``prompt_tokens`` tokens (``estimate_prompt_tokens`` over-estimates) and the reply
        at most ``max_tokens`` (the API enforces it). Pinned by
        ``test_worst_case_bounds_the_cost_of_any_usage_within_the_limits``.
        Raises ``UnknownModelPriceError``, and ``ValueError`` on a negative count.
        """
        if prompt_tokens < 0 or max_tokens < 0:
            raise ValueError(
                f"token counts must be >= 0, got prompt_tokens={prompt_tokens!r}, "
                f"max_tokens={max_tokens!r}"
            )
        p = self.price(model)
        prompt_rate = max(p.input_per_mtok, p.cache_write_per_mtok, p.cache_read_per_mtok)
        return (prompt_tokens * prompt_rate + max_tokens * p.output_per_mtok) / _PER_MTOK

    @staticmethod
    def estimate_prompt_tokens(
        system: str, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> int:
        """A cheap, deterministic over-estimate of the prompt tokens of a call.

        The size in bytes of the prompt's JSON encoding (system, messages, tools: what is
        sent, plus our type tags) divided by ``BYTES_PER_TOKEN`` rounding up, plus fixed
        overheads per call, per message, and once if tools are offered. No tokenizer and
        no network: the same input always gives the same number. It is a heuristic bound,
        not a guarantee (text that tokenizes unusually densely, like long random
        identifiers, can beat it); the budget settles on the reported usage after the
        call either way.
        """
        encoded = msgspec.json.encode({"system": system, "messages": messages, "tools": tools})
        estimate = -(-len(encoded) // BYTES_PER_TOKEN)  # ceiling division
        estimate += BASE_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS * len(messages)
        if tools:
            estimate += TOOLS_OVERHEAD_TOKENS
        return estimate
