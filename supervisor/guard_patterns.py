"""Blocked patterns: regexes over the canonical JSON of a tool call's arguments, and the
ones warden ships.

The rules:

- **Canonical arguments.** A call's arguments are matched as one JSON text: keys sorted
  at every depth, no whitespace, UTF-8 unescaped (``canonical_arguments``). So a
  newline inside a string is the two characters ``\\n`` and a quote is ``\\"``; the shipped
  patterns allow for both. The same text is what loop detection compares.
- **Case-insensitive.** Every pattern, shipped or configured, is compiled with
  ``re.IGNORECASE``; ``(?-i:...)`` opts a part out.
- **Shipped defaults** (``DEFAULT_PATTERNS``), each with a name a refusal reports and
  ``policy.disabled_defaults`` can leave out. They aim at the destructive, not the
  merely risky: ``rm -r build`` and ``DELETE FROM t WHERE ...`` pass; ``rm -rf build``
  and ``DELETE FROM t;`` do not. The table of strings each must block and near misses
  each must let through is ``tests/supervisor/test_guard_patterns.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

__all__ = (
    "DEFAULT_PATTERNS",
    "BlockedPattern",
    "canonical_arguments",
    "compile_patterns",
    "default_patterns",
)

_canonical = msgspec.json.Encoder(order="sorted")

# Whitespace inside a JSON string: a blank, or an escaped newline, tab or return.
_WS = r"(?:\s|\\[nrt])"
# A short run of blanks, where a pattern may start at any word: bounded, so a long run of
# escaped newlines (``\n\n...``, each ``n`` a word) is not rescanned from every word.
_GAP = rf"{_WS}{{0,16}}+"
# One option word of a shell command (``-f``, ``--force``), and the blanks after it. A
# word holds no backslash, so ``-a\n`` splits one way only: the patterns stay linear
# (an option that could also swallow an escaped newline backtracks exponentially on
# ``rm -a\n-a\n...``; pinned by test_no_shipped_pattern_backtracks_on_long_option_runs).
_OPT = rf"(?:-[^\s\\]+{_WS}+)"
# A SQL identifier: words, dots, backticks, brackets, and quotes as JSON escapes them.
_IDENT = r"(?:\\\"|[\w.`\[\]])+"
# The end of a SQL statement inside a JSON string: `;`, the string's closing quote, the end.
_END = rf"{_WS}*(?:;|(?<!\\)\"|$)"

DEFAULT_PATTERNS: Mapping[str, str] = {
    # rm with both recursive and force, in any spelling: -rf, -fr, -Rf, -r -f, --recursive --force.
    "shell.rm_rf": (
        rf"\brm{_WS}+{_OPT}*(?:-[a-z]*r[a-z]*f[a-z]*|-[a-z]*f[a-z]*r[a-z]*)\b"
        rf"|\brm{_WS}+{_OPT}*(?:-r|--recursive)\b{_WS}+{_OPT}*(?:-f|--force)\b"
        rf"|\brm{_WS}+{_OPT}*(?:-f|--force)\b{_WS}+{_OPT}*(?:-r|--recursive)\b"
    ),
    # Making a file system erases what the device held.
    "shell.mkfs": r"\bmkfs(?:\.\w+)?\b",
    # dd copying onto anything: the classic way to overwrite a disk.
    "shell.dd": rf"\bdd{_WS}+(?:\w+=[^\s\\]*{_WS}+)*if=",
    # A shell function that pipes itself into itself in the background: :(){ :|:& };:
    "shell.fork_bomb": (
        rf"(?<![\w:])([\w:]++){_GAP}\(\){_GAP}\{{{_GAP}\1{_GAP}\|{_GAP}\1{_GAP}&"
        rf"|\bwhile{_GAP}(?:true|1){_GAP}:{_GAP}os\.fork\(\)"
    ),
    # Fetching a script and running it unseen. The scan to the pipe stops at the next fetch
    # (tried from its own start), so no text is scanned twice.
    "shell.curl_pipe_sh": (
        r"\b(?:curl|wget)\b(?:(?!curl|wget)[^|;&])*+\|\s*(?:sudo\s+)?(?:ba|z|da|k)?sh\b"
        r"|\b(?:ba|z|da|k)?sh\s+(?:-c\s+)?\S{0,2}(?:\$\(|<\()\s*(?:curl|wget)\b"
    ),
    # World-writable, recursively, from an absolute path.
    "shell.chmod_777": rf"\bchmod{_WS}+{_OPT}*(?:-R|--recursive)\b{_WS}+{_OPT}*0?777{_WS}+/",
    # Writing over a block device.
    "shell.overwrite_device": r">\s*/dev/(?:sd|hd|vd|xvd|nvme|mmcblk)",
    "sql.drop": r"\bdrop\s+(?:table|database|schema)\b",
    "sql.truncate": rf"\btruncate{_WS}+table\b|\btruncate{_WS}+{_IDENT}{_END}",
    # DELETE FROM a table, then the statement ends: no WHERE.
    "sql.delete_without_where": rf"\bdelete{_WS}+from{_WS}+{_IDENT}{_END}",
}
"""The shipped blocked patterns, by name (the README lists them)."""

_NEEDS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "shell.rm_rf": (("rm",),),
    "shell.mkfs": (("mkfs",),),
    "shell.dd": (("dd", "if="),),
    "shell.fork_bomb": (("()", "{", "|", "&"), ("fork",)),
    "shell.curl_pipe_sh": (("curl",), ("wget",)),
    "shell.chmod_777": (("chmod", "777"),),
    "shell.overwrite_device": (("/dev/",),),
    "sql.drop": (("drop",),),
    "sql.truncate": (("truncate",),),
    "sql.delete_without_where": (("delete", "from"),),
}
"""For each shipped pattern, words (lower case) without which it cannot match: any clause
whose every word the text holds lets the regex run. A substring test costs next to nothing
next to a regex's scan of a file's content (the shipped regexes took 16 % of warden's
instructions per task in bench/ before this; callgrind)."""


@dataclass(frozen=True, slots=True)
class BlockedPattern:
    """One compiled pattern and the rule a refusal names: ``shell.rm_rf`` for a default,
    ``policy.blocked_patterns[0]`` or ``policy.tools.<tool>.blocked_patterns[0]`` for
    one configured."""

    rule: str
    regex: re.Pattern[str]
    needs: tuple[tuple[str, ...], ...] = ()
    """Words the text must hold for the regex to be tried (``_NEEDS``); empty: always."""

    def find(self, canonical: str, lowered: str | None = None) -> re.Match[str] | None:
        """The pattern's first match in ``canonical``, or ``None``. ``lowered``: the same
        text lower-cased, when the caller has it. The words are checked only in ASCII
        text, where ``str.lower`` folds exactly as the regex's ``IGNORECASE`` does (in
        other text the regex always runs: U+0130 lowers to two characters, U+017F
        matches ``s``)."""
        if self.needs and canonical.isascii():
            low = canonical.lower() if lowered is None else lowered
            if not any(all(word in low for word in clause) for clause in self.needs):
                return None
        return self.regex.search(canonical)

    def search(self, canonical: str) -> bool:
        return self.find(canonical) is not None


def canonical_arguments(arguments: Mapping[str, object]) -> str:
    """The arguments as canonical JSON: sorted keys at every depth, no whitespace."""
    return _canonical.encode(arguments).decode()


def compile_patterns(key: str, patterns: Iterable[str]) -> list[BlockedPattern]:
    """``patterns`` compiled, each named ``<key>[<index>]``. Raises ``re.error`` (the
    settings were checked when loaded: ``config/policy.py``)."""
    return [BlockedPattern(f"{key}[{i}]", re.compile(p, re.IGNORECASE))
            for i, p in enumerate(patterns)]


def default_patterns(disabled: Iterable[str] = ()) -> list[BlockedPattern]:
    """The shipped patterns but ``disabled``, compiled."""
    off = set(disabled)
    return [BlockedPattern(name, re.compile(pattern, re.IGNORECASE), _NEEDS[name])
            for name, pattern in DEFAULT_PATTERNS.items() if name not in off]
