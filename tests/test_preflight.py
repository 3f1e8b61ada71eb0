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


def _rlaif(tmp_path: Path, *args: str, python: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, float]:
    """`rlaif ARGS` without ANTHROPIC_API_KEY, and its seconds. `python`: options for the interpreter.

    The process (and so anything it starts) carries RLAIF_TEST_MARK=<its tmp_path>, and `.args[0]` is its pid."""
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"} | {"RLAIF_TEST_MARK": str(tmp_path)}
    started = time.monotonic()
    with subprocess.Popen([sys.executable, *python, "-m", "rlaif.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=REPO, env=env) as proc:
        stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess([proc.pid, *args], proc.returncode, stdout, stderr), time.monotonic() - started


def _train(tmp_path: Path, *args: str, python: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, float]:
    """`rlaif train examples/cpu-tiny.yaml run.root=TMP/runs ARGS`, and its seconds."""
    return _rlaif(tmp_path, "train", str(EXAMPLE), f"run.root={tmp_path / 'runs'}", *args, python=python)


NO_SYSTEM = '{{ raise_exception("no system role") if messages[0].role == "system" else "" }}'
"""A chat template that refuses pyfunc's prompts, which open with a system message."""
TRAIN = ("train", str(EXAMPLE), "run.root={tmp}/runs")
EVAL = ("eval", "pyfunc", "--out", "{tmp}/out", "--limit", "2")
COLLECT = ("collect", "pyfunc", "--out", "{tmp}/out", "--limit", "2")
UNKNOWN_ENV = ("error: unknown environment 'nosuch'; installed: {installed}. Install its plugin package or give "
               "module:Class")
NOTHING_AT_9 = "nothing answers at http://127.0.0.1:9/v1 ({flag}): connection refused; start the server or fix {flag}"
NO_IMAGE = ("error: sandbox image {image} is not in the Docker engine (the environment's tasks start from it); "
            "build it (`docker build -t {image} ...` FROM rlaif/base:latest) or tag one as it (`docker tag IMAGE "
            "{image}`)")
NO_MODEL = ("error: model directory /nonexist does not exist; build the tiny model with `rlaif model tiny --out "
            "/nonexist` or point model.path at a Hugging Face model directory")
NO_TEMPLATE = "error: {tmp}/model has no chat template; rlaif renders every prompt with one, add it to the tokenizer"
# (id, command line, the one line on stderr). In both, {tmp} is tmp_path, where {tmp}/model is the tiny model with
# its chat template removed (or replaced by NO_SYSTEM, for an argument `template=NO_SYSTEM`), {tmp}/afile is a file
# and {tmp}/judge.yaml a config whose one judge is `anthropic:` (the key is never set here); {installed} lists the
# environments installed (the example plugin is, once a test has installed it).
# The preflight's cheap checks come first: those up to the run root need no Docker engine.
BEFORE_SANDBOX = [
    ("unknown-env", [*TRAIN, "env.name=nosuch"], UNKNOWN_ENV),
    ("empty-train-split", [*TRAIN, "env.args.generated=0"],
     "error: environment 'pyfunc' has no train tasks; check env.args (generated=0)"),
    ("anthropic-judge-without-key", [*TRAIN, 'reward.judges=[{"name": "j", "endpoint": "anthropic:claude-x"}]'],
     "error: judge 'j' (reward.judges): ANTHROPIC_API_KEY is not set; export it to use an anthropic: judge"),
    ("malformed-judge-endpoint", [*TRAIN, 'reward.judges=[{"name": "j", "endpoint": "openai:claude-x"}]'],
     "error: judge 'j' (reward.judges): judge endpoint 'openai:claude-x' is not anthropic:MODEL or "
     "openai:BASE_URL:MODEL (e.g. openai:http://127.0.0.1:8000/v1:tiny)"),
    ("run-root-under-a-file", [*TRAIN, "run.root={tmp}/afile/runs"],
     "error: run.root {tmp}/afile/runs cannot be created: {tmp}/afile is a file; point run.root at a folder"),
    ("group-of-one", [*TRAIN, "rollout.group_size=1"],
     "error: config key 'rollout.group_size': Input should be greater than or equal to 2 (got 1)"),
    ("gpu-learner-on-a-cpu-machine", [*TRAIN, "train.learner_gpus=1"],
     "error: the run needs 1 GPU (learners 1) but this machine (the run starts a local Ray on it) has 0; lower "
     "train.learner_gpus or run it on a Ray cluster that has them (train.ray_address)"),
    ("resource-no-node-has", [*TRAIN, 'train.rollout_resources={"trn": 1}'],
     "error: the run needs 1 trn (rollout workers 1) but this machine (the run starts a local Ray on it) has 0; "
     "lower train.rollout_resources or run it on a Ray cluster that has them (train.ray_address)"),
    ("eval-unknown-env", ["eval", "nosuch", "--policy", "vllm:models/tiny"], UNKNOWN_ENV),
    ("eval-no-such-split", [*EVAL, "--policy", "vllm:models/tiny", "--split", "tset"],
     "error: --split 'tset' is not train, test or all"),
    ("eval-empty-data", [*EVAL, "--policy", "vllm:models/tiny", "--data", "{tmp}/afile"],
     "error: {tmp}/afile holds no tasks"),
    ("eval-server-not-running", [*EVAL, "--policy", "openai:http://127.0.0.1:9/v1:x"],
     "error: " + NOTHING_AT_9.format(flag="--policy")),
    ("eval-malformed-policy", [*EVAL, "--policy", "openai:tiny"],
     "error: policy 'openai:tiny' is not openai:BASE_URL:MODEL or anthropic:MODEL (e.g. "
     "openai:http://127.0.0.1:8000/v1:tiny)"),
    ("eval-missing-model", [*EVAL, "--policy", "vllm:/nonexist"], NO_MODEL),
    ("eval-out-under-a-file", ["eval", "pyfunc", "--policy", "vllm:models/tiny", "--out", "{tmp}/afile/out"],
     "error: --out {tmp}/afile/out cannot be created: {tmp}/afile is a file; point --out at a folder"),
    ("eval-judge-without-key", [*EVAL, "--policy", "vllm:models/tiny", "--config", "{tmp}/judge.yaml"],
     "error: judge 'j' (reward.judges): ANTHROPIC_API_KEY is not set; export it to use an anthropic: judge"),
    ("collect-teacher-not-running", [*COLLECT, "--teacher", "openai:http://127.0.0.1:9/v1:x"],
     "error: " + NOTHING_AT_9.format(flag="--teacher")),
    ("collect-empty-split", [*COLLECT, "--teacher", "reference", "--data", "{tmp}/afile"],
     "error: {tmp}/afile holds no tasks"),
    ("collect-out-under-a-file", ["collect", "pyfunc", "--teacher", "reference", "--out", "{tmp}/afile/out"],
     "error: --out {tmp}/afile/out cannot be created: {tmp}/afile is a file; point --out at a folder"),
]
AFTER_SANDBOX = [
    ("missing-image", [*TRAIN, "env.name=tests.test_preflight:NoImage", "env.args={}"],
     NO_IMAGE.format(image="rlaif/nosuch:latest")),
    ("missing-sandbox-image", [*TRAIN, "sandbox.image=rlaif/mine:1"], NO_IMAGE.format(image="rlaif/mine:1")),
    ("missing-model", [*TRAIN, "model.path=/nonexist"], NO_MODEL),
    ("no-chat-template", [*TRAIN, "model.path={tmp}/model"], NO_TEMPLATE),
    ("template-refuses-the-task", [*TRAIN, "model.path={tmp}/model", "template=NO_SYSTEM"],
     "error: the chat template of {tmp}/model does not render pyfunc's first task (no system role); fix its "
     "template (chat_template.jinja or tokenizer_config.json) or choose another model"),
    ("eval-missing-image", ["eval", "tests.test_preflight:NoImage", "--policy", "vllm:models/tiny", "--out",
                            "{tmp}/out"], NO_IMAGE.format(image="rlaif/nosuch:latest")),
    ("eval-no-chat-template", [*EVAL, "--policy", "vllm:{tmp}/model"], NO_TEMPLATE),
    ("collect-missing-image", ["collect", "tests.test_preflight:NoImage", "--teacher", "reference", "--out",
                               "{tmp}/out"], NO_IMAGE.format(image="rlaif/nosuch:latest")),
]


def _marked_processes(mark: str) -> list[str]:
    """The command lines of live processes that inherited RLAIF_TEST_MARK=`mark`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"RLAIF_TEST_MARK={mark}\0".encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _containers_of(pid: int) -> list[str]:
    """The sandbox containers a process (not one of its Ray workers: a refused run starts no Ray) left behind."""
    import socket

    from rlaif.errors import RlaifError
    from rlaif.sandbox.engine import sandbox_containers

    try:
        return [c.name for c in sandbox_containers(owner=f"{socket.gethostname()}:{pid}")]
    except RlaifError:  # no engine: nothing could have been started in one
        return []


def _check_refused(tmp_path: Path, tiny_model: Path, argv: list[str], line: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    if "template=NO_SYSTEM" in argv:
        (model / "chat_template.jinja").write_text(NO_SYSTEM)
    else:
        (model / "chat_template.jinja").unlink()
    (tmp_path / "afile").write_text("")
    (tmp_path / "judge.yaml").write_text('reward: {judges: [{name: j, endpoint: "anthropic:claude-x"}]}\n')
    before = sorted(tmp_path.iterdir())
    args = [o.replace("{tmp}", str(tmp_path)) for o in argv if o != "template=NO_SYSTEM"]
    done, seconds = _rlaif(tmp_path, *args, python=("-X", "importtime"))
    errors = [x for x in done.stderr.splitlines() if not x.startswith("import time:")]
    assert done.returncode == 2, done.stderr[-2000:]
    from rlaif.registry import entry_points

    assert errors == [line.replace("{tmp}", str(tmp_path)).replace("{installed}", ", ".join(sorted(entry_points())))]
    assert done.stdout == ""
    imported = {x.rpartition("|")[2].strip() for x in done.stderr.splitlines() if x.startswith("import time:")}
    assert not imported & {"ray", "vllm"}, "a refused run starts no Ray and no engine: it never imports them"
    assert seconds < 30
    assert sorted(tmp_path.iterdir()) == before, "a refused run must write nothing"
    assert _marked_processes(str(tmp_path)) == [], "a refused run leaves no process behind (Ray, engines, ...)"
    assert _containers_of(done.args[0]) == [], "a refused run leaves no container behind"


@pytest.mark.unit
@pytest.mark.parametrize(("argv", "line"), [pytest.param(a, line, id=i) for i, a, line in BEFORE_SANDBOX])
def test_bad_input_before_the_sandbox_check_fails_with_one_line(tmp_path, tiny_model, argv, line):
    _check_refused(tmp_path, tiny_model, argv, line)


@pytest.mark.docker
@pytest.mark.parametrize(("argv", "line"), [pytest.param(a, line, id=i) for i, a, line in AFTER_SANDBOX])
def test_bad_input_after_the_sandbox_check_fails_with_one_line(tmp_path, tiny_model, base_image, argv, line):
    _check_refused(tmp_path, tiny_model, argv, line)


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
    assert lines[4].startswith("ok  placement: fits this machine (the run starts a local Ray on it), ")
    assert lines[5:] == ["ok  sandbox docker: the engine answers; image rlaif/base:latest",
                         "ok  model models/tiny: config, tokenizer, chat template renders pyfunc's first task"]
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
    from rlaif.registry import entry_points

    # no "starting a local Ray head" before it
    assert launch.stderr.splitlines() == [UNKNOWN_ENV.replace("{installed}", ", ".join(sorted(entry_points())))]
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
