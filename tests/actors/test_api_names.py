"""Tool names the Messages API refuses (an MCP server's ``server.tool``) are mapped to
names it accepts and back (``actors/api_names.py``), and through the real SDK against
the local Messages API server of ``test_anthropic_model.py``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from warden.actors.api_names import API_TOOL_NAME, ApiToolNames
from warden.bus.wire import Message, ToolResultBlock, ToolSpec, ToolUseBlock

from tests.actors.test_anthropic_model import (
    Canned,
    MessagesAPIServer,
    api_server,  # noqa: F401 - the fixture
    message_body,
    open_model,
    request,
    user,
)


@pytest.mark.parametrize(("names", "name", "alias"), [
    (["read_file", "tickets.search"], "read_file", "read_file"),
    (["read_file", "tickets.search"], "tickets.search", "tickets__search"),
    (["gh.repos/list"], "gh.repos/list", "gh__repos_list"),
    # taken by a name the API accepts: the spelling and a digest of the name
    (["tickets.search", "tickets__search"], "tickets.search", "tickets__search_2d10c5ac"),
    (["tickets.search", "tickets__search"], "tickets__search", "tickets__search"),
])
def test_a_refused_name_is_spelled_with_double_underscores_or_a_digest(
        names: list[str], name: str, alias: str) -> None:
    assert ApiToolNames.of(names).to_api(name) == alias


def test_a_name_too_long_for_the_api_is_cut_with_a_digest() -> None:
    name = "server." + "t" * 80
    alias = ApiToolNames.of([name]).to_api(name)
    assert len(alias) == 64 and API_TOOL_NAME.fullmatch(alias)
    assert alias.startswith("server__ttt")


def test_names_outside_the_set_pass_unchanged() -> None:
    names = ApiToolNames.of(["a.b"])
    assert names.to_api("c.d") == "c.d" and names.from_api("zz") == "zz"


NAMES = st.lists(st.text(alphabet="abcAB_-./:9", min_size=1, max_size=80), max_size=8)


@given(NAMES)
def test_every_alias_is_accepted_distinct_and_maps_back(names: list[str]) -> None:
    mapping = ApiToolNames.of(names)
    aliases = {name: mapping.to_api(name) for name in names}
    assert all(API_TOOL_NAME.fullmatch(alias) for alias in aliases.values())
    assert len(set(aliases.values())) == len(set(names))
    assert all(mapping.from_api(alias) == name for name, alias in aliases.items())


@given(NAMES)
def test_the_mapping_does_not_depend_on_the_order_of_the_names(names: list[str]) -> None:
    forward, backward = ApiToolNames.of(names), ApiToolNames.of(reversed(names))
    assert all(forward.to_api(name) == backward.to_api(name) for name in names)


SEARCH = ToolSpec(name="tickets.search", description="Search the tickets.",
                  input_schema={"type": "object", "properties": {"q": {"type": "string"}}})


@pytest.mark.anyio
async def test_an_mcp_tool_goes_to_the_api_by_its_alias_and_comes_back_by_its_name(
    api_server: MessagesAPIServer,  # noqa: F811 - the fixture
) -> None:
    api_server.reply(Canned(200, message_body([{
        "type": "tool_use", "id": "toolu_1", "name": "tickets__search", "input": {"q": "refund"},
    }], stop_reason="tool_use")))
    api_server.reply(Canned(200, message_body([{"type": "text", "text": "found one"}])))
    history = [user("any refund tickets?")]
    async with open_model(api_server.base_url) as model:
        first = await model.complete(request(history, tools=[SEARCH]))
        [tool_use] = first.content
        assert tool_use == ToolUseBlock(id="toolu_1", name="tickets.search",
                                        input={"q": "refund"})
        history += [Message(role="assistant", content=first.content),
                    Message(role="user", content=[
                        ToolResultBlock(tool_use_id="toolu_1", content="T-9: refund late")])]
        await model.complete(request(history, tools=[SEARCH]))
    first_sent, second_sent = api_server.received
    assert [tool["name"] for tool in first_sent.body["tools"]] == ["tickets__search"]  # type: ignore[index, union-attr]
    assistant = second_sent.body["messages"][1]  # type: ignore[index]
    assert assistant["content"][0]["name"] == "tickets__search"
