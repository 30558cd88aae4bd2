"""The workspace confines every path to its root and bounds what passes through it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from warden.actors.errors import ToolArgumentsError, ToolError, WorkspaceEscapeError
from warden.actors.workspace import MAX_WRITE_BYTES, Workspace


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the workspace, holding a file no tool may reach."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("secret")
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    return Workspace(root)


def test_path_inside_resolves_under_the_root(ws: Workspace) -> None:
    assert ws.resolve("a/b.txt", tool="read_file") == ws.root / "a" / "b.txt"
    assert ws.resolve("a/../b.txt", tool="read_file") == ws.root / "b.txt"
    assert ws.resolve("", tool="list_files") == ws.root


@pytest.mark.parametrize(
    "path", ["../x", "..", "a/../../x", "/etc/passwd", "../outside/secret.txt"]
)
def test_paths_leading_out_are_escapes(ws: Workspace, path: str) -> None:
    with pytest.raises(WorkspaceEscapeError) as caught:
        ws.resolve(path, tool="read_file")
    assert caught.value.path == path
    assert caught.value.tool == "read_file"
    assert str(caught.value) == f"tool 'read_file': path {path!r} is outside the run's workspace"


def test_a_nul_byte_is_bad_arguments(ws: Workspace) -> None:
    with pytest.raises(ToolArgumentsError, match="NUL byte"):
        ws.resolve("a\x00b", tool="read_file")


def test_symlink_leading_out_is_an_escape(ws: Workspace, outside: Path) -> None:
    (ws.root / "link").symlink_to(outside / "secret.txt")
    (ws.root / "dirlink").symlink_to(outside)
    for path in ("link", "dirlink/secret.txt"):
        with pytest.raises(WorkspaceEscapeError):
            ws.read(path, tool="read_file")
    with pytest.raises(WorkspaceEscapeError):
        ws.write("dirlink/new.txt", b"x", tool="write_file")
    assert not (outside / "new.txt").exists()


def test_symlink_staying_inside_is_followed(ws: Workspace) -> None:
    (ws.root / "real.txt").write_text("hello")
    (ws.root / "alias.txt").symlink_to("real.txt")
    assert ws.read("alias.txt", tool="read_file").text == "hello"


def test_symlink_swapped_in_after_the_check_is_refused(
    ws: Workspace, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ws.root / "sub").mkdir()
    (ws.root / "sub" / "secret.txt").write_text("inside")
    checked = Workspace.resolve

    def resolve_then_swap(self: Workspace, relative: str, *, tool: str) -> Path:
        path = checked(self, relative, tool=tool)
        # The race: after the check passed, "sub" becomes a symlink out.
        os.rename(ws.root / "sub", ws.root / "old-sub")
        (ws.root / "sub").symlink_to(outside)
        return path

    monkeypatch.setattr(Workspace, "resolve", resolve_then_swap)
    with pytest.raises(WorkspaceEscapeError):
        ws.read("sub/secret.txt", tool="read_file")


def test_write_creates_parents_and_reads_back(ws: Workspace) -> None:
    assert ws.write("pkg/sub/mod.py", b"x = 1\n", tool="write_file") == 6
    read = ws.read("pkg/sub/mod.py", tool="read_file")
    assert (read.path, read.text, read.size, read.truncated) == (
        "pkg/sub/mod.py",
        "x = 1\n",
        6,
        False,
    )
    ws.write("pkg/sub/mod.py", b"y = 2\n", tool="write_file")
    assert ws.read("pkg/sub/mod.py", tool="read_file").text == "y = 2\n"
    assert sorted(p.name for p in (ws.root / "pkg" / "sub").iterdir()) == ["mod.py"]


def test_write_over_the_cap_is_refused(ws: Workspace) -> None:
    with pytest.raises(ToolArgumentsError, match="more than the 10-byte cap"):
        ws.write("big.txt", b"x" * 11, tool="write_file", max_bytes=10)
    with pytest.raises(ToolArgumentsError):
        ws.write("big.txt", b"x" * (MAX_WRITE_BYTES + 1), tool="write_file")
    assert not (ws.root / "big.txt").exists()


def test_write_to_the_root_or_a_directory_is_a_tool_error(ws: Workspace) -> None:
    (ws.root / "d").mkdir()
    with pytest.raises(ToolError, match="workspace root"):
        ws.write(".", b"x", tool="write_file")
    with pytest.raises(ToolError, match="cannot write 'd'"):
        ws.write("d", b"x", tool="write_file")


def test_read_is_bounded(ws: Workspace) -> None:
    (ws.root / "big.txt").write_bytes(b"a" * 1000)
    read = ws.read("big.txt", tool="read_file", max_bytes=10)
    assert (read.data, read.size, read.truncated) == (b"a" * 10, 1000, True)


def test_reading_a_missing_file_or_a_directory_is_a_tool_error(ws: Workspace) -> None:
    (ws.root / "d").mkdir()
    with pytest.raises(ToolError, match=r"'nope\.txt' does not exist"):
        ws.read("nope.txt", tool="read_file")
    with pytest.raises(ToolError, match="not a regular file"):
        ws.read("d", tool="read_file")


def test_listing_is_recursive_sorted_and_marks_kinds(ws: Workspace, outside: Path) -> None:
    ws.write("b.txt", b"", tool="write_file")
    ws.write("a/x.py", b"", tool="write_file")
    (ws.root / "out").symlink_to(outside)
    listing = ws.listing(".", tool="list_files")
    assert listing.entries == ("a/", "a/x.py", "b.txt", "out@")
    assert not listing.truncated


def test_listing_is_bounded(ws: Workspace) -> None:
    for index in range(5):
        ws.write(f"f{index}.txt", b"", tool="write_file")
    listing = ws.listing(".", tool="list_files", max_entries=3)
    assert len(listing.entries) == 3
    assert listing.truncated


def test_files_skips_symlinks_and_directories(ws: Workspace, outside: Path) -> None:
    ws.write("a/x.py", b"", tool="write_file")
    ws.write("y.py", b"", tool="write_file")
    (ws.root / "link.py").symlink_to(outside / "secret.txt")
    assert ws.files(".", tool="grep", max_files=10) == ["y.py", "a/x.py"]
    assert ws.files("y.py", tool="grep", max_files=10) == ["y.py"]
