"""A unified diff between two snapshots of a file tree ({relative path: bytes}), as `git diff` shows one.

Text files get hunks; binary files (not UTF-8) get a one-line "Binary files differ" note, like git.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping


def tree_diff(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> str:
    """The changes that turn `before` into `after`: added, removed and modified files, sorted by path."""
    chunks = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        a = f"a/{path}" if old is not None else "/dev/null"
        b = f"b/{path}" if new is not None else "/dev/null"
        try:
            old_lines = (old or b"").decode().splitlines(keepends=True)
            new_lines = (new or b"").decode().splitlines(keepends=True)
        except UnicodeDecodeError:
            chunks.append(f"Binary files {a} and {b} differ\n")
            continue
        lines = list(difflib.unified_diff(old_lines, new_lines, a, b))
        chunks.append("".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                              for line in lines))
    return "".join(chunks)
