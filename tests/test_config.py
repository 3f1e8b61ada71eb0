"""Config loading: YAML plus dotted overrides, with one-line errors that name the key and the fix."""

import subprocess
import sys
from pathlib import Path

import pytest

from rlaif.core.config import ConfigError, load_config, load_reward_config

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "cpu-tiny.yaml"


def _rlaif(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_overrides_are_typed_and_nested():
    config = load_config(EXAMPLE, ["learner.lr=3e-4", "rollout.group_size=4", "env.args.path=data/x.jsonl"])
    assert config.learner.lr == 3e-4
    assert config.rollout.group_size == 4
    assert config.env.args == {"generated": 100, "path": "data/x.jsonl"}
    assert config.model.path == "models/tiny"


def test_misspelt_key_names_the_closest_valid_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: m\nlearner:\n  lr_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'learner.lr_rate'; did you mean 'learner.lr'\?"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"'sandbx'; did you mean 'sandbox'"):
        load_config(EXAMPLE, ["sandbx.image=x"])
    bad.write_text("model:\n  path: m\nreward:\n  judges:\n    - {nme: j}\n")  # inside an item of a list
    with pytest.raises(ConfigError, match=r"'reward.judges.0.nme'; did you mean 'reward.judges.0.name'\?"):
        load_config(bad)


def test_overrides_reach_items_of_a_list_by_position_or_by_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: m}\nreward:\n  judges:\n    - {name: a, budget_usd: 1}\n    - {name: b}\n")
    config = load_config(path, ["reward.judges.0.budget_usd=2.5", "reward.judges.b.samples=3"])
    assert [j.budget_usd for j in config.reward.judges] == [2.5, None]
    assert [j.samples for j in config.reward.judges] == [1, 3]
    for bad in ("reward.judges.2.samples=3", "reward.judges.c.samples=3"):
        with pytest.raises(ConfigError, match=r"reward.judges has 2 item\(s\) \(a, b\); name one by position 0..1"):
            load_config(path, [bad])


def test_config_show_with_a_typo_exits_nonzero_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: m\nrollout:\n  temprature: 0.7\n")
    done = _rlaif("config", "show", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: unknown config key 'rollout.temprature'; did you mean 'rollout.temperature'?"
    )
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("text", "overrides", "line"),
    [
        pytest.param(
            "trianer: {lr: 1}\n", [],
            "error: unknown config key 'trianer' (did you mean 'train'?); also missing required config value"
            " 'model.path'; set it in the file or pass model.path=...",
            id="only-a-typoed-section",
        ),
        pytest.param(
            "learner: {lrr: 1}\n", [],
            "error: unknown config key 'learner.lrr' (did you mean 'learner.lr'?); also missing required config"
            " value 'model.path'; set it in the file or pass model.path=...",
            id="typoed-nested-key-and-missing-model-path",
        ),
        pytest.param(
            "model: {path: m}\ntrianer: {lr: 1}\nlearner: {lrr: 1}\n", [],
            "error: unknown config keys 'learner.lrr' (did you mean 'learner.lr'?), 'trianer' (did you mean 'train'?)",
            id="two-unknown-keys",
        ),
        pytest.param(
            "model: {path: m}\n", ["trainer.lrr=1"],
            "error: unknown config key 'trainer'; did you mean 'train'?",
            id="unknown-key-in-an-override",
        ),
    ],
)
def test_unknown_keys_are_all_named_before_other_problems(tmp_path, text, overrides, line):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    done = _rlaif("config", "show", str(path), *overrides)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [line]
    assert done.stdout == ""


def test_config_show_prints_the_resolved_config():
    done = _rlaif("config", "show", str(EXAMPLE), "learner.steps=7")
    assert done.returncode == 0, done.stderr
    assert "steps: 7" in done.stdout
    assert load_config(EXAMPLE, ["learner.steps=7"]).learner.steps == 7


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("model: {path: m}\n", ["learner.steps=abc"], "config key 'learner.steps': Input should be a valid integer"),
        ("model: {path: m}\n", ["learner.lr=-1"], "config key 'learner.lr': Input should be greater than 0"),
        ("run: {name: x}\n", [], "missing required config value 'model.path'"),
        ("model: [\n", [], "is not valid YAML at line 2"),
        ("- a\n- b\n", [], "must hold a mapping of sections"),
        ("model: {path: m}\n", ["learner"], "is not of the form a.b.c=value"),
        ("model: {path: m}\n", ["model.path.x=1"], "model.path is a value, not a section"),
        ("model: {path: m}\n", ["learner.loss=dr_grpo", "learner.scale_rewards=true"],
         "learner.scale_rewards: true contradicts loss dr_grpo, which only centres advantages (Dr. GRPO); drop"),
    ],
)
def test_bad_config_is_one_line_naming_the_problem(tmp_path, text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("loss", "scaled"), [("grpo", True), ("dapo", True), ("gspo", True), ("dr_grpo", False)])
def test_reward_scaling_follows_the_loss_unless_set(tmp_path, loss, scaled):
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: m}\n")
    assert load_config(path, [f"learner.loss={loss}"]).learner.scales_rewards is scaled
    assert load_config(path, [f"learner.loss={loss}", "learner.scale_rewards=false"]).learner.scales_rewards is False


def test_episodes_get_the_environments_own_turn_limit_unless_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: m}\n")
    assert load_config(path).rollout.max_turns is None
    assert load_config(path, ["rollout.max_turns=3"]).rollout.max_turns == 3


def test_missing_config_file_is_a_clear_error():
    done = _rlaif("config", "show", "no/such.yaml")
    assert done.returncode == 2
    assert "config file no/such.yaml does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_judges_only_config_loads_for_judging_but_not_as_a_whole_config(tmp_path):
    path = tmp_path / "judges.yaml"
    path.write_text("reward:\n  judges:\n    - {name: local, endpoint: 'openai:http://127.0.0.1:8000/v1:j'}\n")
    assert [j.name for j in load_reward_config(path).judges] == ["local"]
    assert load_reward_config(path, ["model.dtype=bfloat16"]).judges[0].endpoint.endswith(":j")
    with pytest.raises(ConfigError, match=r"^missing required config value 'model.path'; set it in the file or pass"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^unknown config key 'learner.lrr'; did you mean 'learner.lr'\?$"):
        load_reward_config(path, ["learner.lrr=1"])  # every section is still checked
    with pytest.raises(ConfigError, match=r"^config key 'rollout.group_size': Input should be greater"):
        load_reward_config(path, ["rollout.group_size=0"])
