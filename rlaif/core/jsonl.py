"""Reading JSONL (or JSONL.gz) input files whose every line must be an object with some fields.

A bad line is one RlaifError naming the file, the line number and what is wrong; blank lines are skipped.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

from rlaif.errors import RlaifError


def read_jsonl(path: Path, required: Sequence[str] = (), noun: str = "JSON object", hint: str = "") -> list[dict]:
    """The objects of a JSONL file; `noun` and `hint` word the error for a line missing `required` fields."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RlaifError(f"{path}:{number}: not valid JSON ({err.msg}); each line must be one {noun}") from None
            missing = [k for k in required if not isinstance(row, dict) or k not in row]
            if missing:
                raise RlaifError(f"{path}:{number}: {noun} is missing {', '.join(missing)}; {hint}")
            rows.append(row)
    return rows
