"""`rlaif report` writes report.html: checked in a real headless Chromium (`make setup` installs it), on run
directories written the way `rlaif train`, `rlaif eval` and `rlaif collect` write them."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlaif.report import ReportServer, write_report
from rlaif.types import Message, RewardResult, ToolCall, ToolRecord, Trajectory, Turn

REPO = Path(__file__).resolve().parent.parent
HOSTILE = ["<script>document.body.setAttribute('data-pwned','1')</script>",
           "<img src=x onerror=\"document.title='PWNED'\">",
           "</script><script>document.body.setAttribute('data-pwned','2')</script>",
           "[x](javascript:alert(1))"]


# ---- run directories, shaped as the commands write them -------------------------------------------------------
def _trajectory(i: int, task: str, version: int, total: float | None, *, status: str = "ok",
                answer: str = "def add(a, b):\n    return a + b", component: str = "tests",
                reason: str = "correct and minimal") -> Trajectory:
    call = ToolCall(id=f"call{i}", name="python", arguments={"code": "print(add(1, 2))"})
    if total is None:
        reward = RewardResult(status="infra_error", details={component: {"error": "sandbox died"}})
    else:
        reward = RewardResult(status=status, total=total, components={component: total}, details={
            component: {"run_status": "ok", "exit_code": 0, "log": "..F\n1 failed, 2 passed",
                        "tests": {"test_add": "passed", "test_neg": "passed", "test_big": "failed"}},
            "judge": {"reason": reason, "usage": {"input_tokens": 120, "output_tokens": 30, "cost_usd": 0.0021},
                      "judge": "j", "model": "m"}})
    return Trajectory(
        id=f"traj-{i}", task_id=task, group_id=f"{task}@{i // 4}", weight_version=version, status="ok",
        messages=[Message(role="system", content="You write Python."), Message(role="user", content=f"Solve {task}."),
                  Message(role="assistant", content="Let me test it.", tool_calls=[call]),
                  Message(role="tool", content="3", tool_call_id=call.id),
                  Message(role="assistant", content=answer)],
        turns=[Turn(prompt_ids=[1, 2, 3], completion_ids=[4, 5], logprobs=[-0.5, -0.1], loss_mask=[1, 1])],
        tools=[ToolRecord(call=call, output="3", duration_s=0.25)], timings={"generate": 1.5, "reward": 0.5},
        reward=reward)


def _train_rows(groups: int, group_size: int = 4) -> list[dict]:
    """trajectories.jsonl rows of a train run: group g has version g // 3; every 5th group is dropped (no_signal),
    group 7 lost whole to infrastructure (the row the trainer writes when a group's generation raised)."""
    rows = []
    for g in range(groups):
        if g == 7:
            rows.append({"group_index": g, "dropped": "infra_error", "error": "RuntimeError('worker died')"})
            continue
        task = ("add", "sub", "mul")[g % 3] + f"-{g}"
        for j in range(group_size):
            i = g * group_size + j
            status = "policy_error" if j == 3 else "ok"
            traj = _trajectory(i, task, g // 3, j / (group_size - 1), status=status)
            rows.append({**traj.model_dump(mode="json"), "group_index": g,
                         "dropped": "no_signal" if g % 5 == 4 else None})
    return rows


def _metrics_rows(steps: int) -> list[dict]:
    """metrics.jsonl rows with the keys the trainer logs (see Trainer.run and batch_metrics)."""
    rows = []
    for s in range(1, steps + 1):
        rows.append({"step": s, "time": 1.7e9 + s, "reward/mean": 0.1 * s, "reward/std": 0.3 - 0.01 * s,
                     "reward/tests": 0.1 * s, "pass_rate": 0.05 * s, "truncated_rate": 0.0, "staleness/mean": 0.5,
                     "staleness/max": 1.0, "judge_cost_usd": 0.01, "time/wait_s": 0.1, "time/train_s": 1.0 + s % 3,
                     "time/step_s": 2.0 + s % 3, "tokens_per_s": 100.0 + s, "episodes": 8, "version": s,
                     "trained_groups": [2 * s, 2 * s + 1], "dropped_total/no_signal": s // 2,
                     "judge/j/spent_usd": 0.01 * s, "judge/j/calls": 4 * s, "lr": 1e-6, "kl": 0.001 * s,
                     "clip_frac": 0.01, "entropy": 1.5 - 0.05 * s, "grad_norm": None})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def train_dir(tmp_path: Path) -> Path:
    run = tmp_path / "demo-20260101-000000"
    run.mkdir()
    _write_jsonl(run / "metrics.jsonl", _metrics_rows(8))
    _write_jsonl(run / "trajectories.jsonl", _train_rows(20))
    _write_jsonl(run / "probe.jsonl", [{"step": s, "pass@1": 0.2 + 0.05 * s, "tasks": 50} for s in (2, 4, 6, 8)])
    return run


# ---- the browser ----------------------------------------------------------------------------------------------
def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run `make setup` (launch/host-setup.sh installs Debian's chromium)")
    return path


def _browse(page: Path | str, tmp_path: Path, *args: str) -> str:
    """What Chromium prints for `page` (a file, or a URL) with `args`: the DOM after load for --dump-dom."""
    url = page.as_uri() if isinstance(page, Path) else page
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args, url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _dom(page: Path, tmp_path: Path, fragment: str = "") -> Dom:
    return Dom(_browse(page.as_uri() + fragment, tmp_path, "--dump-dom"))


class Dom(HTMLParser):
    """A dumped DOM: every element with its attributes, and the text shown outside script and style elements."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._raw = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._raw += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._raw -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._raw:
            self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k.replace("_", "-")) == v
                                                                  for k, v in attrs.items())]

    def one(self, tag: str, **attrs: str) -> dict[str, str]:
        found = self.find(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} {attrs}> in the page"
        return found[0]

    def count(self) -> int:
        return int(self.one("p", id="count")["data-count"])


def _png_colours(path: Path) -> tuple[int, float]:
    """(distinct colours, share of pixels that are not the top-left pixel's colour) of an 8-bit RGB(A) PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, pixels = bytearray(stride), []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):  # undo the row's PNG filter
            a, b, c = line[x - bpp] if x >= bpp else 0, prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels.extend(bytes(line[x:x + bpp]) for x in range(0, stride, bpp))
        prev = line
    background = pixels[0]
    return len(set(pixels)), sum(p != background for p in pixels) / len(pixels)


# ---- the tests ------------------------------------------------------------------------------------------------
def test_every_numeric_metric_and_the_probe_is_drawn_as_a_curve_of_all_its_steps(train_dir, tmp_path):
    page = write_report(train_dir)
    dom = _dom(page, tmp_path)
    charts = {a["data-key"]: int(a["data-points"]) for a in dom.find("svg", **{"class": "chart"})}
    numeric = {k for row in _metrics_rows(8) for k, v in row.items()
               if k not in ("step", "time") and isinstance(v, int | float)}
    assert set(charts) == numeric | {"probe/pass@1", "probe/tasks"}
    assert all(charts[k] == 8 for k in numeric) and charts["probe/pass@1"] == 4
    lines = [a["d"] for a in dom.find("path", **{"class": "line"})]
    assert len(lines) == len(charts) and all(d.count("L") + 1 in (8, 4) for d in lines)
    assert dom.one("div", **{"class": "family", "data-family": "held-out probe"})
    assert "grad_norm" not in charts  # every value null (non-finite): nothing to draw


def test_the_page_paints_charts_and_text_not_a_blank_screen(train_dir, tmp_path):
    shot = tmp_path / "shot.png"
    _browse(write_report(train_dir), tmp_path, f"--screenshot={shot}", "--window-size=1200,900")
    colours, ink = _png_colours(shot)
    assert colours > 20 and ink > 0.03, (colours, ink)


def test_filters_from_the_url_narrow_the_list_to_the_matching_trajectories(train_dir, tmp_path):
    page = write_report(train_dir)
    rows = [json.loads(line) for line in (train_dir / "trajectories.jsonl").read_text().splitlines()]
    everything = _dom(page, tmp_path)
    assert everything.count() == len(rows) == 77
    assert len(everything.find("tr", **{"class": "traj-row"})) == 50  # one page
    expected = {
        "#task=ADD": sum("add" in r.get("task_id", "") for r in rows),
        "#status=policy_error": sum((r.get("reward") or {}).get("status") == "policy_error" for r in rows),
        "#dropped=no_signal": sum(r["dropped"] == "no_signal" for r in rows),
        "#dropped=infra_error&status=infra_error": 1,
        "#version=2&rmin=0.5&rmax=0.9": sum(r.get("weight_version") == 2 and 0.5 <= r["reward"]["total"] <= 0.9
                                            for r in rows if r.get("reward")),
    }
    for fragment, count in expected.items():
        dom = _dom(page, tmp_path, fragment)
        assert 0 < dom.count() == count < len(rows), fragment
        assert len(dom.find("tr", **{"class": "traj-row"})) == min(count, 50), fragment
    second = _dom(page, tmp_path, "#page=2")
    assert len(second.find("tr", **{"class": "traj-row"})) == len(rows) - 50


def test_a_trajectory_shows_its_conversation_tools_tests_judge_and_staleness(train_dir, tmp_path):
    page = write_report(train_dir)
    rows = [json.loads(line) for line in (train_dir / "trajectories.jsonl").read_text().splitlines()]
    i = next(n for n, r in enumerate(rows) if r["group_index"] == 4)  # trained at step 2 (version 2, drawn at 1)
    dom = _dom(page, tmp_path, f"#traj={i}")
    text = "".join(dom.text)
    assert dom.one("section", id="detail")["data-i"] == str(i)
    for shown in ("Solve sub-4.", "print(add(1, 2))", "def add(a, b):\n    return a + b", "1 failed, 2 passed",
                  "test_big", "correct and minimal", "judge cost: 0.002 USD", "trained at step", "tool (answers call"):
        assert shown in text, shown
    facts = re.search(r"<dt>staleness</dt><dd>(-?\d+)</dd>", dom.html)
    assert facts and int(facts.group(1)) == 1 - rows[i]["weight_version"]

    group = _dom(page, tmp_path, "#group=4")
    assert group.one("section", id="group")["data-size"] == "4"
    assert len(group.find("div", **{"class": "answer"})) == 4


def test_model_text_in_every_field_is_shown_as_text_and_never_runs(tmp_path):
    run = tmp_path / "run-<img src=x onerror=\"document.title='PWNED'\">"
    run.mkdir()
    payload = "\n".join(HOSTILE)
    trajectories = [_trajectory(0, payload, 0, 1.0, answer=payload, component=HOSTILE[1], reason=payload),
                    _trajectory(1, payload, 0, 0.0, answer=payload)]
    trajectories[0].tools[0].output = payload
    trajectories[0].messages[2].tool_calls[0].name = HOSTILE[0]
    trajectories[0].error = payload
    _write_jsonl(run / "trajectories.jsonl", [{**t.model_dump(mode="json"), "group_index": 0, "dropped": None}
                                              for t in trajectories])
    _write_jsonl(run / "metrics.jsonl", [{"step": 1, "time": 0.0, f"reward/{HOSTILE[1]}": 1.0}])
    page = write_report(run)
    for fragment in ("", "#traj=0", "#group=0", "#task=" + urllib.request.quote(HOSTILE[0])):
        dom = _dom(page, tmp_path, fragment)
        assert re.search(r"<title>rlaif report: run-&lt;img src=x onerror=\"document.title='PWNED'\"&gt;</title>",
                         dom.html), fragment  # the run's name, as text: the title was not set by the payload
        assert not re.search(r"<body[^>]*data-pwned", dom.html), fragment
        assert not dom.find("img") and not dom.find("a"), fragment
        assert not [a for _, a in dom.elements if any(k.startswith("on") for k in a)], fragment
        assert len(dom.find("script")) == 4, fragment  # meta, index, one block, the page's own script
        text = "".join(dom.text)
        assert all(h in text for h in HOSTILE), fragment  # shown, verbatim
    assert dom.count() == 2


def test_ten_thousand_trajectories_open_in_under_two_seconds_without_parsing_them(tmp_path):
    run = tmp_path / "big"
    run.mkdir()
    _write_jsonl(run / "metrics.jsonl", _metrics_rows(200))
    _write_jsonl(run / "trajectories.jsonl", _train_rows(2501))
    started = time.monotonic()
    page = write_report(run)
    generated_s = time.monotonic() - started
    assert page.stat().st_size < (run / "trajectories.jsonl").stat().st_size  # token ids are left out
    assert generated_s < 30
    dom = _dom(page, tmp_path)
    assert dom.count() == 10001  # group 7 is one row for its 4 lost episodes
    ready_ms = int(dom.one("html")["data-ready-ms"])
    assert ready_ms < 2000
    assert "data-parsed-blocks" not in dom.one("html")  # the list needs only the index
    print(f"10k trajectories: {page.stat().st_size / 1e6:.1f} MB, generated in {generated_s:.1f} s, "
          f"ready in {ready_ms} ms")
    last = _dom(page, tmp_path, "#traj=10000")
    assert last.one("html")["data-parsed-blocks"] == "1" and last.one("section", id="detail")["data-i"] == "10000"


def test_eval_and_collect_directories_get_the_browser_and_their_summary_instead_of_curves(tmp_path):
    from rlaif.distill.dataset import trajectory_row

    evaluation, collection = tmp_path / "eval-pyfunc", tmp_path / "collect-pyfunc"
    evaluation.mkdir()
    collection.mkdir()
    trajs = [_trajectory(i, f"task-{i // 2}", 0, float(i % 2)) for i in range(6)] + [_trajectory(6, "task-3", 0, None)]
    (evaluation / "trajectories.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in trajs))
    (evaluation / "summary.json").write_text(json.dumps({"env": "pyfunc", "pass@1": 0.5, "skipped": {"grading": 1}}))
    kept = [trajectory_row(t, row_id=f"{t.task_id}|orig|0|{t.id}", env="pyfunc", tools=[], provenance={"teacher": "x"})
            for t in trajs if t.reward.total == 1.0]
    _write_jsonl(collection / "train.jsonl", kept)
    _write_jsonl(collection / "attempts.jsonl", [*({"id": r["id"], "status": "kept", "reward": 1.0, "reason": ""}
                                                   for r in kept),
                                                 {"id": "task-0|orig|0|traj-0", "status": "rejected", "reward": 0.0,
                                                  "reason": "below min_reward"}])
    (collection / "summary.json").write_text(json.dumps({"kept": 3, "rejected": 1}))
    for run, count in ((evaluation, 7), (collection, 4)):
        dom = _dom(write_report(run), tmp_path)
        assert not dom.find("section", id="curves") and dom.one("section", id="summary")
        assert dom.count() == count
    detail = "".join(_dom(collection / "report.html", tmp_path, "#traj=0").text)
    assert "print(add(1, 2))" in detail and "def add(a, b)" in detail  # an OpenAI-form tool call, read back
    assert _dom(collection / "report.html", tmp_path, "#status=rejected").count() == 1


def test_the_served_report_follows_the_run_and_the_page_polls_for_it(train_dir, tmp_path):
    server = ReportServer(train_dir, 0)
    polls = []
    fresh = server.fresh
    server.fresh = lambda: polls.append(1) or fresh()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server.server_address[0] == "127.0.0.1"
        first = urllib.request.urlopen(server.url + "version").read().decode()
        assert '"reward/mean":[[1,' in urllib.request.urlopen(server.url).read().decode()
        with (train_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": 9, "time": 0.0, "reward/mean": 0.9}) + "\n" + '{"step": 10, "rew')  # torn
        second = urllib.request.urlopen(server.url + "version").read().decode()
        assert second != first and "[9,0.9]" in (train_dir / "report.html").read_text()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(server.url + "metrics.jsonl")
        polls.clear()
        _browse(server.url, tmp_path, "--dump-dom", "--virtual-time-budget=5000")
        assert len(polls) >= 3  # the page, then its polls of /version
    finally:
        server.shutdown()
        server.server_close()


def test_report_command_keeps_its_table_and_writes_the_page_atomically(train_dir, monkeypatch):
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "report", str(train_dir)], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "tok/s" in done.stdout and "dropped groups: {'no_signal': 4}" in done.stdout
    assert f"report: {train_dir / 'report.html'}" in done.stdout
    assert sorted(p.name for p in train_dir.iterdir()) == ["metrics.jsonl", "probe.jsonl", "report.html",
                                                           "trajectories.jsonl"]  # no temporary file left
    from rlaif.cli import report_cmd
    from rlaif.cli.main import app

    opened = []
    monkeypatch.setattr(report_cmd.webbrowser, "open", opened.append)
    result = CliRunner().invoke(app, ["report", str(train_dir), "--open"])
    assert result.exit_code == 0, result.output
    assert opened == [(train_dir / "report.html").resolve().as_uri()]
