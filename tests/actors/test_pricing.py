"""``PriceTable``: what a call cost, the most it can cost, and the prompt estimate."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from warden.actors.errors import ActorError, UnknownModelPriceError
from warden.actors.pricing import PriceTable
from warden.bus.wire import Message, TextBlock, ToolSpec, Usage
from warden.config.settings import PriceEntry, PricingSettings

SONNET = PriceEntry(
    input_per_mtok=3.0,
    output_per_mtok=15.0,
    cache_write_per_mtok=3.75,
    cache_read_per_mtok=0.30,
)
PLAIN = PriceEntry(input_per_mtok=2.0, output_per_mtok=8.0)
TABLE = PriceTable(
    PricingSettings(as_of="2025-10-15", models={"claude-sonnet-4-5": SONNET, "plain": PLAIN})
)
MTOK = 1_000_000


@pytest.mark.parametrize(
    ("usage", "dollars"),
    [
        (Usage(input_tokens=MTOK), 3.0),
        (Usage(output_tokens=MTOK), 15.0),
        (Usage(cache_creation_input_tokens=MTOK), 3.75),
        (Usage(cache_read_input_tokens=MTOK), 0.30),
        (Usage(input_tokens=1_000, output_tokens=500), 0.003 + 0.0075),
        (
            Usage(
                input_tokens=2_000,
                output_tokens=1_000,
                cache_creation_input_tokens=4_000,
                cache_read_input_tokens=10_000,
            ),
            0.006 + 0.015 + 0.015 + 0.003,
        ),
        (Usage(), 0.0),
    ],
    ids=["input", "output", "cache-write", "cache-read", "input+output", "all-four", "none"],
)
def test_cost_prices_each_kind_of_token_at_its_own_rate(usage: Usage, dollars: float) -> None:
    assert TABLE.cost("claude-sonnet-4-5", usage) == pytest.approx(dollars, rel=1e-12)


def test_cost_of_cache_tokens_is_zero_when_the_table_gives_no_cache_prices() -> None:
    usage = Usage(cache_creation_input_tokens=MTOK, cache_read_input_tokens=MTOK)
    assert TABLE.cost("plain", usage) == 0.0


def test_worst_case_prices_max_tokens_as_output() -> None:
    assert TABLE.worst_case("plain", 0, MTOK) == pytest.approx(8.0)
    assert TABLE.worst_case("plain", 1_000, 2_048) == pytest.approx(
        (1_000 * 2.0 + 2_048 * 8.0) / MTOK
    )


def test_worst_case_prices_the_prompt_at_the_dearest_input_side_rate() -> None:
    # A prompt token may be billed as a cache write, which costs more than plain input.
    assert TABLE.worst_case("claude-sonnet-4-5", MTOK, 0) == pytest.approx(3.75)
    assert TABLE.worst_case("plain", MTOK, 0) == pytest.approx(2.0)


@given(
    prompt_tokens=st.integers(min_value=0, max_value=2_000_000),
    max_tokens=st.integers(min_value=0, max_value=200_000),
    split=st.tuples(st.floats(min_value=0, max_value=1), st.floats(min_value=0, max_value=1)),
    output_share=st.floats(min_value=0, max_value=1),
    model=st.sampled_from(["claude-sonnet-4-5", "plain"]),
)
def test_worst_case_bounds_the_cost_of_any_usage_within_the_limits(
    prompt_tokens: int,
    max_tokens: int,
    split: tuple[float, float],
    output_share: float,
    model: str,
) -> None:
    # Any way the provider splits the prompt into input, cache write and cache read,
    # and any reply of at most max_tokens.
    written = int(prompt_tokens * split[0])
    read = int((prompt_tokens - written) * split[1])
    usage = Usage(
        input_tokens=prompt_tokens - written - read,
        cache_creation_input_tokens=written,
        cache_read_input_tokens=read,
        output_tokens=int(max_tokens * output_share),
    )
    assert usage.output_tokens <= max_tokens

    worst = TABLE.worst_case(model, prompt_tokens, max_tokens)

    assert TABLE.cost(model, usage) <= worst * (1 + 1e-12)


def test_worst_case_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="prompt_tokens=-1"):
        TABLE.worst_case("plain", -1, 10)


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.cost("claude-mystery-9", Usage(input_tokens=1)),
        lambda t: t.worst_case("claude-mystery-9", 10, 10),
        lambda t: t.price("claude-mystery-9"),
    ],
    ids=["cost", "worst_case", "price"],
)
def test_unknown_model_raises_naming_the_model_and_the_table_date(
    call: Callable[[PriceTable], object],
) -> None:
    with pytest.raises(UnknownModelPriceError) as caught:
        call(TABLE)

    error = caught.value
    assert isinstance(error, ActorError)
    assert error.model == "claude-mystery-9"
    assert error.as_of == "2025-10-15"
    assert error.retryable is False
    assert "'claude-mystery-9'" in str(error)
    assert "2025-10-15" in str(error)
    assert "'claude-sonnet-4-5'" in str(error)  # says which models it does know


def test_a_dated_snapshot_is_priced_as_its_alias() -> None:
    # The API answers a request for an alias with the snapshot that served it.
    usage = Usage(input_tokens=MTOK)
    assert TABLE.cost("claude-sonnet-4-5-20250929", usage) == TABLE.cost("claude-sonnet-4-5", usage)
    assert "claude-sonnet-4-5-20250929" in TABLE
    assert "claude-sonnet-4-5-preview" not in TABLE


def test_a_snapshot_with_its_own_entry_uses_it() -> None:
    table = PriceTable(
        PricingSettings(as_of="2025-10-15", models={"m": PLAIN, "m-20250101": SONNET})
    )
    assert table.price("m-20250101") == SONNET
    assert table.price("m-20990101") == PLAIN


def test_table_reports_its_models_and_date() -> None:
    assert TABLE.as_of == "2025-10-15"
    assert TABLE.models == ("claude-sonnet-4-5", "plain")
    assert "plain" in TABLE
    assert "claude-mystery-9" not in TABLE


# -- the prompt estimate ----------------------------------------------------------------

PROSE = (
    "The supervisor restarts a failed child according to its restart type; a transient "
    "child that exits normally is not restarted, a permanent one always is. "
) * 20
TOOL = ToolSpec(
    name="read_file",
    description="Read a file of the workspace.",
    input_schema={"type": "object", "properties": {"path": {"type": "string"}}},
)


def conversation(*texts: str) -> list[Message]:
    return [Message(role="user", content=[TextBlock(text=t)]) for t in texts]


def test_estimate_is_deterministic() -> None:
    first = PriceTable.estimate_prompt_tokens("system", conversation(PROSE), [TOOL])
    second = PriceTable.estimate_prompt_tokens("system", conversation(PROSE), [TOOL])
    assert first == second


def test_estimate_over_counts_prose_at_three_bytes_per_token() -> None:
    # English prose tokenizes at about four bytes per token; the estimate allows three.
    estimate = PriceTable.estimate_prompt_tokens("", conversation(PROSE), [])
    assert estimate >= len(PROSE.encode()) / 3
    assert estimate > len(PROSE.encode()) / 4


def test_estimate_grows_with_system_messages_and_tools() -> None:
    base = PriceTable.estimate_prompt_tokens("", conversation("hi"), [])
    assert PriceTable.estimate_prompt_tokens(PROSE, conversation("hi"), []) > base
    assert PriceTable.estimate_prompt_tokens("", conversation("hi", "there"), []) > base
    # Offering tools costs the API's tool-use system prompt on top of their schemas.
    assert PriceTable.estimate_prompt_tokens("", conversation("hi"), [TOOL]) >= base + 300


def test_estimate_counts_multibyte_text_by_its_bytes() -> None:
    ascii_text = PriceTable.estimate_prompt_tokens("", conversation("a" * 300), [])
    cjk_text = PriceTable.estimate_prompt_tokens("", conversation("語" * 300), [])
    assert cjk_text >= 300  # at least a token per character
    assert cjk_text > ascii_text
