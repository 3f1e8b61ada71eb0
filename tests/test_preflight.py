"""The preflight of `rlaif train`: bad input fails in seconds with one line, before Ray starts or a file is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlaif.env import Environment, Grader, ToolSpec
from rlaif.types import Task
from tests.support.fault_server import JudgeEndpoint, Reply

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "cpu-tiny.yaml"


class NoImage(Environment):
    """An environment whose episodes (they have a tool) start from an image no engine has
    (`env.name=tests.test_preflight:NoImage`)."""

    name = "noimage"
    image = "rlaif/nosuch:latest"

    def tasks(self, split: str) -> list[Task]:
        return [Task(id=f"noimage/{split}", env=self.name, split=split, prompt="Say hi.")]

    def tools(self, task: Task) -> list[ToolSpec]:
        return [ToolSpec(name="bash", description="Run a shell command.")]

    def graders(self, task: Task) -> list[Grader]:
        return []


def _train(tmp_path: Path, *args: str, python: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, float]:
    """`rlaif train examples/cpu-tiny.yaml run.root=TMP/runs ARGS`, without ANTHROPIC_API_KEY; and its seconds.
    `python`: options for the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, *python, "-m", "rlaif.cli", "train", str(EXAMPLE),
                           f"run.root={tmp_path / 'runs'}", *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    return done, time.monotonic() - started


NO_SYSTEM = '{{ raise_exception("no system role") if messages[0].role == "system" else "" }}'
"""A chat template that refuses pyfunc's prompts, which open with a system message."""
# (id, overrides, the one line on stderr); {tmp} is tmp_path, where {tmp}/model is the tiny model with its chat
# template removed (or replaced by NO_SYSTEM, for an override `template=NO_SYSTEM`) and {tmp}/afile is a file.
# The preflight's cheap checks come first: those up to the run root need no Docker engine.
BEFORE_SANDBOX = [
    ("unknown-env", ["env.name=nosuch"],
     "error: unknown environment 'nosuch'; installed: arith, judged_qa, pyfunc, repo_repair. Install its plugin "
     "package or give module:Class"),
    ("empty-train-split", ["env.args.generated=0"],
     "error: environment 'pyfunc' has no train tasks; check env.args (generated=0)"),
    ("anthropic-judge-without-key", ['reward.judges=[{"name": "j", "endpoint": "anthropic:claude-x"}]'],
     "error: judge 'j' (reward.judges): ANTHROPIC_API_KEY is not set; export it to use an anthropic: judge"),
    ("malformed-judge-endpoint", ['reward.judges=[{"name": "j", "endpoint": "openai:claude-x"}]'],
     "error: judge 'j' (reward.judges): judge endpoint 'openai:claude-x' is not anthropic:MODEL or "
     "openai:BASE_URL:MODEL (e.g. openai:http://127.0.0.1:8000/v1:tiny)"),
    ("run-root-under-a-file", ["run.root={tmp}/afile/runs"],
     "error: run.root {tmp}/afile/runs cannot be created: {tmp}/afile is a file; point run.root at a folder"),
]
AFTER_SANDBOX = [
    ("missing-image", ["env.name=tests.test_preflight:NoImage", "env.args={}"],
     "error: sandbox image rlaif/nosuch:latest is not in the Docker engine (the environment's tasks start from it); "
     "build it (`docker build -t rlaif/nosuch:latest ...` FROM rlaif/base:latest) or tag one as it "
     "(`docker tag IMAGE rlaif/nosuch:latest`)"),
    ("missing-sandbox-image", ["sandbox.image=rlaif/mine:1"],
     "error: sandbox image rlaif/mine:1 is not in the Docker engine (the environment's tasks start from it); "
     "build it (`docker build -t rlaif/mine:1 ...` FROM rlaif/base:latest) or tag one as it "
     "(`docker tag IMAGE rlaif/mine:1`)"),
    ("missing-model", ["model.path=/nonexist"],
     "error: model directory /nonexist does not exist; build the tiny model with `rlaif model tiny --out /nonexist` "
     "or point model.path at a Hugging Face model directory"),
    ("no-chat-template", ["model.path={tmp}/model"],
     "error: {tmp}/model has no chat template; rlaif renders every prompt with one, add it to the tokenizer"),
    ("template-refuses-the-task", ["model.path={tmp}/model", "template=NO_SYSTEM"],
     "error: the chat template of {tmp}/model does not render pyfunc's first task (no system role); fix its "
     "template (chat_template.jinja or tokenizer_config.json) or choose another model"),
]


def _check_refused(tmp_path: Path, tiny_model: Path, overrides: list[str], line: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    if "template=NO_SYSTEM" in overrides:
        (model / "chat_template.jinja").write_text(NO_SYSTEM)
    else:
        (model / "chat_template.jinja").unlink()
    (tmp_path / "afile").write_text("not a folder")
    args = [o.replace("{tmp}", str(tmp_path)) for o in overrides if o != "template=NO_SYSTEM"]
    done, seconds = _train(tmp_path, *args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [line.replace("{tmp}", str(tmp_path))]
    assert done.stdout == ""
    assert seconds < 30  # the one line above says Ray never started: its progress bar would print "starting Ray"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "model"], "a refused run must write nothing"


@pytest.mark.unit
@pytest.mark.parametrize(("overrides", "line"), [pytest.param(o, line, id=i) for i, o, line in BEFORE_SANDBOX])
def test_bad_input_before_the_sandbox_check_fails_with_one_line(tmp_path, tiny_model, overrides, line):
    _check_refused(tmp_path, tiny_model, overrides, line)


@pytest.mark.docker
@pytest.mark.parametrize(("overrides", "line"), [pytest.param(o, line, id=i) for i, o, line in AFTER_SANDBOX])
def test_bad_input_after_the_sandbox_check_fails_with_one_line(tmp_path, tiny_model, base_image, overrides, line):
    _check_refused(tmp_path, tiny_model, overrides, line)


@pytest.mark.docker
def test_check_prints_what_it_verified_and_writes_nothing(tmp_path, tiny_model, base_image):
    judge = 'reward.judges=[{"name": "local", "endpoint": "openai:http://127.0.0.1:9/v1:tiny"}]'
    done, seconds = _train(tmp_path, judge, "--check", python=("-X", "importtime"))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        f"ok  config {EXAMPLE}",
        "ok  environment pyfunc: 82 train, 18 test tasks",
        "ok  judge local openai:http://127.0.0.1:9/v1:tiny: endpoint parses, key set where one is needed",
    ]
    assert lines[3].startswith(f"ok  run.root {tmp_path / 'runs'}: writable, ")
    assert lines[4:6] == ["ok  sandbox docker: the engine answers; image rlaif/base:latest",
                          "ok  model models/tiny: config, tokenizer, chat template renders pyfunc's first task"]
    assert lines[6].startswith("skip placement: ") and len(lines) == 7
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()}
    assert not imported & {"ray", "vllm"}, "the preflight must not import Ray or vLLM"
    assert seconds < 30
    assert list(tmp_path.iterdir()) == [], "--check must leave nothing behind"


@pytest.mark.unit
def test_probe_makes_one_real_call_per_judge_and_names_one_that_does_not_answer():
    from rlaif.cli.preflight import check_judge
    from rlaif.core.config import JudgeConfig
    from rlaif.errors import RlaifError

    with JudgeEndpoint(Reply(text="OK")) as endpoint:
        judge = JudgeConfig(name="local", endpoint=f"openai:{endpoint.url}/v1:judge")
        assert check_judge(judge, probe=True) == f"judge local {judge.endpoint}: answered a probe call"
        assert len(endpoint.requests) == 1
        assert check_judge(judge, probe=False).endswith("endpoint parses, key set where one is needed")
        assert len(endpoint.requests) == 1, "without --probe no call is made"
    dead = JudgeConfig(name="dead", endpoint="openai:http://127.0.0.1:9/v1:judge", timeout_s=5)
    with pytest.raises(RlaifError, match=r"^judge 'dead' \(openai:http://127.0.0.1:9/v1:judge\) did not answer a "
                                         r"probe call \(APIConnectionError: .*\); check the endpoint"):
        check_judge(dead, probe=True)


@pytest.mark.unit
def test_launch_and_sft_run_the_preflight_before_anything_starts(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    launch = subprocess.run([sys.executable, "-m", "rlaif.cli", "launch", str(EXAMPLE), "env.name=nosuch"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert launch.returncode == 2
    assert launch.stderr.splitlines() == [  # no "starting a local Ray head" before it
        "error: unknown environment 'nosuch'; installed: arith, judged_qa, pyfunc, repo_repair. Install its plugin "
        "package or give module:Class"]
    out = tmp_path / "afile" / "sft"
    sft = subprocess.run([sys.executable, "-m", "rlaif.cli", "sft", str(tmp_path), "--model", "models/tiny",
                          "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert sft.returncode == 2
    assert sft.stderr.splitlines() == [f"error: --out {out} cannot be created: {tmp_path / 'afile'} is a file; "
                                       "point --out at a folder"]


@pytest.mark.unit
def test_room_for_a_checkpoint_and_hub_ids(tmp_path, monkeypatch):
    from rlaif.cli.preflight import check_writable, model_dir
    from rlaif.errors import RlaifError

    with pytest.raises(RlaifError, match=r"^run.root .*/runs has .* free, less than the 1048576.0 GiB a checkpoint "
                                         r"takes \(about 3x the model's weights\); free some space"):
        check_writable(tmp_path / "runs", "run.root", 1 << 50)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert model_dir("some-org/some-model") is None, "a Hub id not in the cache is the learners' to download"
    assert model_dir("models/tny") == Path("models/tny"), "a typo of a local path is still a local path"
    assert model_dir("/nonexist") == Path("/nonexist")
