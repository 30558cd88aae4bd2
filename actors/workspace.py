"""The workspace: the one directory a run's tools may read and write.

Every path a model names is relative to the workspace root and is confined to it:

- an absolute path is refused, and so is any path that, once ``..`` and symlinks are
  resolved, lands outside the root (``WorkspaceEscapeError``); a symlink that stays inside
  is followed;
- the resolved path is then opened by walking down from the root one component at a time
  with ``O_NOFOLLOW`` (``dir_fd``), so a symlink swapped in between the check and the use
  is refused too rather than followed out;
- reads, writes and listings are bounded (``max_bytes``, ``max_entries``), so a model can
  neither flood its own context nor fill the disk through a tool.

The methods here block on the file system; the tools call them through
``anyio.to_thread.run_sync``. They raise ``ToolError`` subclasses only: the tool's name is
passed in (``tool=``) so the error says which call was refused.

This confines the file tools. It is not a jail for code run in the sandbox
(``actors/sandbox.py``), which bounds resources, not the file system.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

import msgspec
from warden.actors.errors import ToolArgumentsError, ToolError, WorkspaceEscapeError

MAX_READ_BYTES = 256 * 1024
"""Ceiling of one read, whatever a caller asks for."""
MAX_WRITE_BYTES = 1024 * 1024
"""Largest file one write may create."""
MAX_LIST_ENTRIES = 1000
"""Most entries one listing returns."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FileRead(msgspec.Struct, frozen=True, kw_only=True):
    """What one bounded read returned: the first ``len(data)`` of ``size`` bytes."""

    path: str
    """The path relative to the workspace root, with ``/`` separators."""
    data: bytes
    size: int
    """The file's size when it was opened."""

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.size

    @property
    def text(self) -> str:
        """The bytes read as UTF-8; undecodable bytes become U+FFFD."""
        return self.data.decode("utf-8", errors="replace")


class Listing(msgspec.Struct, frozen=True, kw_only=True):
    """A bounded recursive listing. Directories end in ``/``, symlinks in ``@``."""

    entries: tuple[str, ...]
    truncated: bool


class Workspace:
    """The directory tools are confined to; see the module docstring for the rules.

    ``root`` is resolved once, here; it need not exist yet (a write creates it).
    """

    __slots__ = ("_root",)

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()

    @property
    def root(self) -> Path:
        """The resolved absolute root."""
        return self._root

    def __repr__(self) -> str:
        return f"Workspace({str(self._root)!r})"

    def resolve(self, relative: str, *, tool: str) -> Path:
        """Resolve ``relative`` against the root and check it stays inside.

        Does not block on anything but ``realpath``; the path need not exist. Raises
        ``WorkspaceEscapeError`` for an absolute path or one leading out (through ``..``
        or a symlink), ``ToolArgumentsError`` for a NUL byte, ``ToolError`` for a
        symlink loop. ``""`` means the root.
        """
        if "\x00" in relative:
            raise ToolArgumentsError(tool, f"path {relative!r} contains a NUL byte")
        pure = PurePosixPath(relative or ".")
        if pure.is_absolute():
            raise WorkspaceEscapeError(tool, relative)
        try:
            candidate = (self._root / pure).resolve()
        except (OSError, RuntimeError) as exc:  # 3.11 raises RuntimeError on a loop
            raise ToolError(tool, f"path {relative!r} cannot be resolved: {exc}") from None
        if not candidate.is_relative_to(self._root):
            raise WorkspaceEscapeError(tool, relative)
        return candidate

    def relative(self, path: Path) -> str:
        """``path`` (inside the root) as the ``/``-separated name a model sees."""
        return path.relative_to(self._root).as_posix()

    def listing(
        self, relative: str = ".", *, tool: str, max_entries: int = MAX_LIST_ENTRIES
    ) -> Listing:
        """List ``relative`` recursively, sorted, at most ``max_entries`` entries.

        Symlinks are listed, never followed. Raises ``ToolError`` if the path is missing.
        """
        target = self.resolve(relative, tool=tool)
        if not target.exists():
            raise ToolError(tool, f"path {relative!r} does not exist")
        if not target.is_dir():
            return Listing(entries=(self.relative(target),), truncated=False)
        limit = min(max_entries, MAX_LIST_ENTRIES)
        entries: list[str] = []
        truncated = False
        for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
            dirnames.sort()
            here = Path(dirpath)
            for name in [*dirnames, *sorted(filenames)]:
                if len(entries) >= limit:
                    truncated = True
                    break
                entries.append(self._entry_name(here / name))
            if truncated:
                break
        return Listing(entries=tuple(sorted(entries)), truncated=truncated)

    def files(self, relative: str = ".", *, tool: str, max_files: int) -> list[str]:
        """Regular files under ``relative`` (symlinks skipped), sorted, at most ``max_files``.

        Raises ``ToolError`` if the path is missing.
        """
        target = self.resolve(relative, tool=tool)
        if not target.exists():
            raise ToolError(tool, f"path {relative!r} does not exist")
        if target.is_file():
            return [self.relative(target)]
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    found.append(self.relative(path))
                    if len(found) >= max_files:
                        return found
        return found

    def read(self, relative: str, *, tool: str, max_bytes: int = MAX_READ_BYTES) -> FileRead:
        """Read at most ``max_bytes`` (capped at ``MAX_READ_BYTES``) of a regular file.

        Raises ``WorkspaceEscapeError`` / ``ToolError`` as ``resolve`` does, and
        ``ToolError`` if the path is missing or not a regular file.
        """
        target = self.resolve(relative, tool=tool)
        limit = max(0, min(max_bytes, MAX_READ_BYTES))
        parent, name = self._open_parent(target, relative, tool=tool, create=False)
        try:
            fd = self._open(
                name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=parent,
                relative=relative,
                tool=tool,
            )
        finally:
            os.close(parent)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ToolError(tool, f"path {relative!r} is not a regular file")
            chunks: list[bytes] = []
            remaining = limit
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 65536))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        return FileRead(path=self.relative(target), data=data, size=max(info.st_size, len(data)))

    def write(
        self, relative: str, data: bytes, *, tool: str, max_bytes: int = MAX_WRITE_BYTES
    ) -> int:
        """Write ``data`` to ``relative``, creating parent directories; return its size.

        Atomic: the bytes go to a temporary file beside the target, then replace it, so a
        reader never sees half a file and writing the same bytes twice is the same as
        once. A symlink at the target is replaced, not followed. Raises
        ``ToolArgumentsError`` if ``data`` exceeds ``max_bytes`` (capped at
        ``MAX_WRITE_BYTES``), ``ToolError`` if the target is a directory or cannot be
        written.
        """
        limit = min(max_bytes, MAX_WRITE_BYTES)
        if len(data) > limit:
            raise ToolArgumentsError(
                tool, f"content is {len(data)} bytes, more than the {limit}-byte cap"
            )
        target = self.resolve(relative, tool=tool)
        self._root.mkdir(parents=True, exist_ok=True)
        parent, name = self._open_parent(target, relative, tool=tool, create=True)
        temp = f".{name}.{os.getpid()}.tmp"
        try:
            fd = self._open(
                temp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=parent,
                relative=relative,
                tool=tool,
            )
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            try:
                os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError as exc:
                os.unlink(temp, dir_fd=parent)
                raise ToolError(tool, f"cannot write {relative!r}: {exc.strerror}") from None
        finally:
            os.close(parent)
        return len(data)

    # -- internals ----------------------------------------------------------------------

    def _entry_name(self, path: Path) -> str:
        name = self.relative(path)
        if path.is_symlink():
            return f"{name}@"
        return f"{name}/" if path.is_dir() else name

    def _open_parent(
        self, target: Path, relative: str, *, tool: str, create: bool
    ) -> tuple[int, str]:
        """Open the directory holding ``target`` from the root down, following no symlink.

        Returns the directory's fd (the caller closes it) and the last component. A
        component that is a symlink now (it was not when ``resolve`` ran) is an escape.
        """
        parts = target.relative_to(self._root).parts
        if not parts:
            raise ToolError(tool, f"path {relative!r} is the workspace root, not a file")
        fd = self._open(str(self._root), _DIR_FLAGS, relative=relative, tool=tool)
        try:
            for part in parts[:-1]:
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    except OSError as exc:
                        raise ToolError(
                            tool, f"cannot create a directory for {relative!r}: {exc.strerror}"
                        ) from None
                child = self._open(part, _DIR_FLAGS, dir_fd=fd, relative=relative, tool=tool)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    @staticmethod
    def _open(
        path: str,
        flags: int,
        mode: int = 0o777,
        *,
        dir_fd: int | None = None,
        relative: str,
        tool: str,
    ) -> int:
        """``os.open``, with its ``OSError`` translated into the tool errors."""
        try:
            return os.open(path, flags, mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK) or _is_symlink(path, dir_fd):
                # O_NOFOLLOW met a symlink (with O_DIRECTORY, Linux says ENOTDIR).
                raise WorkspaceEscapeError(tool, relative) from None
            if exc.errno == errno.ENOENT:
                raise ToolError(tool, f"path {relative!r} does not exist") from None
            if exc.errno == errno.EISDIR:
                raise ToolError(tool, f"path {relative!r} is a directory") from None
            raise ToolError(tool, f"cannot open {relative!r}: {exc.strerror}") from None


def _is_symlink(path: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
