"""`rlaif quickstart`: its refusals, the GRPO config it writes, and how a stage shows on the console. The pipeline
itself is `make quickstart` (about 10 minutes on 2 cores after setup, too long for the suite); each of its stages is a
command tested on its own (tests/test_eval.py, test_collect.py, test_sft.py, test_train.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from rlaif.cli.quickstart_cmd import EXAMPLE, TASKS, _grpo_config, grpo_curve
from rlaif.core.config import load_config

pytestmark = pytest.mark.unit

STAGE = """
import sys
from pathlib import Path
from rlaif.cli.quickstart_cmd import _rlaif
_rlaif(Path(sys.argv[1]), *sys.argv[2:])
"""


def test_the_grpo_config_starts_from_the_sft_model_and_a_model_teacher_also_judges(tmp_path):
    plain = yaml.safe_load(_grpo_config(EXAMPLE, tmp_path, "reference", "local").read_text())
    assert plain["model"]["path"] == str(tmp_path / "sft") and plain["run"]["root"] == str(tmp_path)
    assert plain["sandbox"]["backend"] == "local" and not plain.get("reward", {}).get("judges")
    seeded = yaml.safe_load(_grpo_config(EXAMPLE, tmp_path, "reference", "local", seed=3).read_text())
    assert seeded["env"]["args"] == {**TASKS, "seed": 3} and seeded["run"]["seed"] == 3, "the evaluations' tasks"
    judged = load_config(_grpo_config(EXAMPLE, tmp_path, "anthropic:claude-sonnet-4-5", "docker"), [])
    assert [j.endpoint for j in judged.reward.judges] == ["anthropic:claude-sonnet-4-5"]
    [component] = [c for c in judged.reward.components if c.kind == "judge"]
    assert component.judge == "teacher" and component.gate == "tests" and judged.sandbox.backend == "docker"



def test_the_grpo_curve_is_read_from_the_runs_metrics(tmp_path):
    rows = [{"step": k, "reward/mean": k / 20, "entropy": 2 - k / 20, "trained_groups": [k, k + 100],
             "dropped_total/no_signal": 3 * k, **({"heldout/pass@1": k / 40} if k % 10 == 0 else {})}
            for k in range(1, 21)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert grpo_curve(tmp_path) == {"reward_first": 0.275, "reward_last": 0.775, "entropy_first": 1.725,
                                    "entropy_last": 1.225, "heldout_probe": {10: 0.25, 20: 0.5},
                                    "groups_trained": 40, "groups_no_signal": 60}


@pytest.mark.parametrize(("args", "message"), [
    (["--teacher", "gpt"], "is not reference, anthropic:MODEL or openai:BASE_URL:MODEL"),
    (["--backend", "podman"], "is not local or docker"),
    (["--teacher", "anthropic:claude-sonnet-4-5"], "needs ANTHROPIC_API_KEY"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "qs"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "quickstart", "--out", str(out), *args],
                          capture_output=True, text=True, env=env)
    assert done.returncode != 0 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _stage(tmp_path, *args: str) -> tuple[int, str]:
    """One quickstart stage, run by a parent process whose stderr is a terminal (a pty); returns its exit code and the
    lines the terminal showed (colours and cursor moves taken out, each redraw of a bar a line)."""
    master, terminal = os.openpty()
    parent = subprocess.Popen([sys.executable, "-c", STAGE, str(tmp_path / "logs"), *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=terminal, env={**os.environ, "COLUMNS": "200"})
    os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the parent and its children have closed the terminal
        while chunk := os.read(master, 65536):
            shown += chunk
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown.decode(errors="replace"))
    return parent.wait(), [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def test_a_stage_shows_its_command_bar_and_time_and_keeps_its_output_in_its_log(tmp_path, tiny_model):
    code, shown = _stage(tmp_path, "collect", "pyfunc", "--teacher", "reference", "--limit", "4", "--backend", "local",
                         "--out", str(tmp_path / "teacher"))
    assert code == 0, shown
    assert shown[0].startswith("$ rlaif collect pyfunc --teacher reference"), shown
    assert any(line.startswith("collect pyfunc") and "4/4" in line for line in shown), "the bar, drawn by the stage"
    assert shown[-1].strip().endswith(f"log {tmp_path / 'logs' / 'teacher.log'}]"), shown
    assert not any("dataset in" in line for line in shown), shown
    log = (tmp_path / "logs" / "teacher.log").read_text()
    assert "dataset in" in log and "collect pyfunc" not in log, "the stage's own output is in its log, the bar is not"

    # transformers draws a bar of its own as it saves, under SFT's live bar: that goes to the log too
    code, shown = _stage(tmp_path, "sft", str(tmp_path / "teacher"), "--model", str(tiny_model), "--epochs", "1",
                         "--out", str(tmp_path / "sft"))
    assert code == 0, shown
    assert any(line.startswith("sft tiny") for line in shown), shown
    assert not any("Writing model shards" in line or "trained" in line for line in shown), shown
    assert "Writing model shards" in (tmp_path / "logs" / "sft.log").read_text()


def test_a_failed_stage_ends_the_quickstart_with_its_cause_and_its_log(tmp_path):
    code, shown = _stage(tmp_path, "collect", "nosuchenv", "--teacher", "reference", "--out", str(tmp_path / "teacher"))
    assert code != 0
    cause = shown[-1]
    assert "quickstart stage `rlaif collect` failed (exit 2): unknown environment 'nosuchenv'" in cause, cause
    assert str(tmp_path / "logs" / "teacher.log") in cause
