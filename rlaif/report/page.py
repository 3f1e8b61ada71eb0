"""The report as one HTML file: the run's data embedded as JSON, drawn by `assets/report.js` (no library, nothing
fetched), so it opens offline from file:// and can be mailed around.

Opening fast with many trajectories: the list view reads only a compact index (`INDEX_FIELDS` per trajectory);
full trajectories sit in `<script type="application/json">` blocks of `BLOCK_SIZE`, each parsed the first time one
of its trajectories is shown. Model text is untrusted: every `<` in embedded JSON is written `\\u003c`, so no text
can close its script element, and the script renders data only as text nodes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from rlaif.report.data import Run, load_run, signature

BLOCK_SIZE = 500
INDEX_FIELDS = ("i", "id", "weight_version", "task_id", "total", "kind", "dropped", "group", "staleness")


def write_report(path: Path) -> Path:
    """Read the run in `path` and write `path/report.html` atomically (a temporary file beside it, then
    `os.replace`: a reader never sees half a page); returns the file's path."""
    version = signature(path)
    page = render(load_run(path), version)
    tmp = path / f".report.html.{os.getpid()}.{threading.get_ident()}.tmp"  # one per writer, so none clobbers another
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path / "report.html")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path / "report.html"


def render(run: Run, version: str) -> str:
    """The page of `run`; `version` is what a served page compares with the server's to know it is out of date."""
    name = run.path.resolve().name
    meta = {"name": name, "kind": run.kind, "version": version, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
            "series": run.series, "summary": run.summary, "count": len(run.trajectories), "block_size": BLOCK_SIZE,
            "index_fields": INDEX_FIELDS}
    index = [[_total(t) if key == "total" else t.get(key) for key in INDEX_FIELDS] for t in run.trajectories]
    blocks = [run.trajectories[i:i + BLOCK_SIZE] for i in range(0, len(run.trajectories), BLOCK_SIZE)]
    data = [_json_script("rlaif-meta", meta), _json_script("rlaif-index", index),
            *(_json_script(f"rlaif-block-{b}", block) for b, block in enumerate(blocks))]
    return "\n".join([
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>rlaif report: {escape(name)}</title>", f"<style>\n{_asset('report.css')}</style>", "</head>",
        "<body>", '<main id="app"><p>Loading…</p></main>', *data, f"<script>\n{_asset('report.js')}</script>",
        "</body>", "</html>", ""])


def _json_script(element_id: str, value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _asset(name: str) -> str:
    text = resources.files("rlaif.report").joinpath("assets", name).read_text(encoding="utf-8")
    assert "</script" not in text.lower() and "</style" not in text.lower(), f"{name} must not close its element"
    return text


def _total(traj: dict[str, Any]) -> float | None:
    return (traj.get("reward") or {}).get("total")
