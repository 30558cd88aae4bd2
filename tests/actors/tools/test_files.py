"""The file tools do what they say, inside the workspace only: ``files.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from warden.actors.workspace import Workspace

from tests.actors.tools.support import call


@pytest.mark.anyio
async def test_write_then_read_round_trips(ws: Workspace) -> None:
    content = "def greet():\n    return 'héllo'\n"
    written = await call(ws, "write_file", {"path": "pkg/greet.py", "content": content})
    assert written.ok
    assert written.output == f"wrote {len(content.encode())} bytes to pkg/greet.py"
    read = await call(ws, "read_file", {"path": "pkg/greet.py"})
    assert (read.ok, read.output) == (True, content)


@pytest.mark.anyio
async def test_read_file_says_when_it_truncated(ws: Workspace) -> None:
    (ws.root / "big.txt").write_text("z" * 100)
    record = await call(ws, "read_file", {"path": "big.txt", "max_bytes": 10})
    assert record.output == "z" * 10 + "\n[... truncated: 10 of 100 bytes shown]"


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x"])
@pytest.mark.parametrize("tool", ["read_file", "write_file", "list_files", "grep", "run_tests"])
@pytest.mark.anyio
async def test_escapes_are_refused_by_every_path_tool(ws: Workspace, tool: str, path: str) -> None:
    arguments: dict[str, object] = {"path": path}
    if tool == "write_file":
        arguments["content"] = "x"
    if tool == "grep":
        arguments["pattern"] = "root"
    record = await call(ws, tool, arguments)
    assert not record.ok
    assert record.output == f"tool {tool!r}: path {path!r} is outside the run's workspace"


@pytest.mark.anyio
async def test_a_symlink_out_is_refused(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret-x")
    (ws.root / "link.txt").symlink_to(tmp_path / "secret.txt")
    record = await call(ws, "read_file", {"path": "link.txt"})
    assert not record.ok
    assert "outside the run's workspace" in record.output
    found = await call(ws, "grep", {"pattern": "secret"})
    assert found.output == "(no matches)"


@pytest.mark.anyio
async def test_list_files_lists_recursively(ws: Workspace) -> None:
    (ws.root / "src").mkdir()
    (ws.root / "src" / "app.py").write_text("")
    (ws.root / "README.md").write_text("")
    record = await call(ws, "list_files", {})
    assert record.output == "README.md\nsrc/\nsrc/app.py"
    empty = await call(ws, "list_files", {"path": "src/.."})
    assert empty.ok
    missing = await call(ws, "list_files", {"path": "nope"})
    assert (missing.ok, missing.output) == (False, "tool 'list_files': path 'nope' does not exist")


@pytest.mark.anyio
async def test_grep_finds_matching_lines(ws: Workspace) -> None:
    (ws.root / "a.py").write_text("import os\ndef alpha():\n    pass\n")
    (ws.root / "pkg").mkdir()
    (ws.root / "pkg" / "b.py").write_text("def beta():\n    return 1\n")
    (ws.root / "blob.bin").write_bytes(b"\0def binary")
    record = await call(ws, "grep", {"pattern": r"def \w+\("})
    assert record.ok
    assert record.output == "a.py:2: def alpha():\npkg/b.py:1: def beta():"
    narrowed = await call(ws, "grep", {"pattern": "def", "path": "pkg"})
    assert narrowed.output == "pkg/b.py:1: def beta():"
    none = await call(ws, "grep", {"pattern": "gamma"})
    assert none.output == "(no matches)"


@pytest.mark.anyio
async def test_grep_with_a_bad_regex_is_bad_arguments(ws: Workspace) -> None:
    record = await call(ws, "grep", {"pattern": "def ("})
    assert not record.ok
    assert record.output.startswith("tool 'grep': bad arguments: pattern 'def (' is not a valid")


@pytest.mark.anyio
async def test_grep_bounds_its_matches(ws: Workspace) -> None:
    (ws.root / "many.txt").write_text("hit\n" * 500)
    record = await call(ws, "grep", {"pattern": "hit"})
    lines = record.output.splitlines()
    assert len(lines) == 201
    assert lines[-1] == "[... more matches; the first 200 are shown]"
