"""What `rlaif launch` prepares before anything reaches a cluster (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlaif.cluster.jobs import JOB_CONFIG, is_local, job_env, prepare, stage
from rlaif.core.config import load_config
from rlaif.errors import RlaifError


def _write(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": "models/tiny"}, **extra}))
    return path


def test_a_local_job_gets_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    config, args = prepare(_write(tmp_path, reward={"judges": [{"endpoint": "openai:http://127.0.0.1:1/v1:m"}]}),
                           ["run.name=x"], local=True)
    assert args == [JOB_CONFIG]
    assert config.run.root == str(tmp_path / "runs")
    assert config.model.path == str(tmp_path / "models" / "tiny")
    assert config.reward.judges[0].cache == str(tmp_path / "runs" / "judge-cache.sqlite")
    assert config.run.name == "x"


def test_a_remote_job_needs_an_absolute_run_root(tmp_path):
    with pytest.raises(RlaifError, match=r"run.root 'runs' is relative.*run.root=/mnt/runs"):
        prepare(_write(tmp_path), [], local=False)
    config, _ = prepare(_write(tmp_path), ["run.root=/mnt/runs"], local=False)
    assert config.model.path == "models/tiny"  # a hub id or a path on the cluster: left as written


def test_resume_takes_the_run_directory_config(tmp_path):
    run = tmp_path / "runs" / "r-1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"path": "m"}, "run": {"name": "r"}}))
    config, args = prepare(None, ["learner.steps=20"], local=True, resume=run)
    assert args == ["--resume", str(run), "learner.steps=20"]
    assert config.learner.steps == 20
    with pytest.raises(RlaifError, match=r"no config\.yaml there"):
        prepare(None, [], local=True, resume=tmp_path / "nothing")


def test_env_vars_are_taken_by_name_and_a_missing_one_is_named(tmp_path, monkeypatch):
    config = load_config(_write(tmp_path, launch={"env_vars": ["RLAIF_T_KEY", "RLAIF_T_OTHER"]}))
    monkeypatch.setenv("RLAIF_T_KEY", "sk-secret")
    with pytest.raises(RlaifError) as err:
        job_env(config)
    assert str(err.value) == ("launch.env_vars names RLAIF_T_OTHER, not set in this shell; export it or remove it "
                              "from launch.env_vars")
    monkeypatch.setenv("RLAIF_T_OTHER", "")
    assert job_env(config) == {"RLAIF_T_KEY": "sk-secret", "RLAIF_T_OTHER": ""}


def test_stage_copies_the_working_dir_without_excluded_files(tmp_path):
    src = tmp_path / "plugin"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "env.py").write_text("X = 1\n")
    (src / "data.jsonl").write_text("{}\n")
    (src / ".git").mkdir()
    (src / "big.bin").write_bytes(b"0" * 10)
    config = load_config(_write(tmp_path, launch={"working_dir": str(src), "excludes": ["*.bin"]}))
    out = tmp_path / "staged"
    out.mkdir()
    stage(config, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "data.jsonl", "pkg", "pkg/env.py", JOB_CONFIG]
    assert load_config(out / JOB_CONFIG) == config


def test_a_missing_working_dir_is_named(tmp_path):
    config = load_config(_write(tmp_path, launch={"working_dir": str(tmp_path / "nope")}))
    with pytest.raises(RlaifError, match=r"launch\.working_dir .* is not a folder"):
        stage(config, tmp_path)


@pytest.mark.parametrize(("address", "local"), [
    ("http://127.0.0.1:8265", True), ("http://localhost:8265", True), ("127.0.0.1:8265", True),
    ("http://10.0.0.5:8265", False), ("https://ray.example.org", False)])
def test_is_local(address, local):
    assert is_local(address) is local
