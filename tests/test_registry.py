"""Environment discovery: entry points and module:Class paths, and one-line errors for broken plugins."""

import subprocess
import sys
import textwrap

import pytest

from rlaif.errors import RlaifError
from rlaif.registry import entry_points, environment_class, load_environment

pytestmark = pytest.mark.unit


def _fake_plugin(tmp_path, name: str, target: str, module_source: str) -> dict:
    """A real installed-looking plugin: a module plus a .dist-info with an entry_points.txt."""
    module = target.split(":")[0]
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(module_source))
    dist = tmp_path / f"broken_plugin_{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: broken-plugin-{name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[rlaif.environments]\n{name} = {target}\n")
    return {"PYTHONPATH": str(tmp_path)}


def _rlaif(env: dict, *args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "rlaif.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env})


def test_builtins_are_registered_as_plugins():
    assert {"pyfunc", "repo_repair", "judged_qa"} <= set(entry_points())
    assert environment_class("pyfunc").name == "pyfunc"


def test_a_plugin_that_fails_to_import_names_its_package_and_the_fix(tmp_path):
    env = _fake_plugin(tmp_path, "crashy", "crashy_env:Env", "import no_such_dependency\n")
    done = _rlaif(env, "env", "check", "crashy")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: environment plugin 'crashy' (package broken-plugin-crashy, entry point crashy_env:Env) failed to "
        "import: ModuleNotFoundError: No module named 'no_such_dependency'; fix or reinstall broken-plugin-crashy"]


def test_a_plugin_exporting_the_wrong_thing_is_refused(tmp_path):
    env = _fake_plugin(tmp_path, "wrong", "wrong_env:make", "def make():\n    return 1\n")
    done = _rlaif(env, "env", "check", "wrong")
    assert done.returncode == 2
    assert "not an Environment subclass; the entry point must name a class that subclasses" in done.stderr


def test_unknown_name_lists_what_is_installed():
    with pytest.raises(RlaifError, match=r"unknown environment 'pyfnuc'; installed: .*pyfunc"):
        environment_class("pyfnuc")


def test_module_class_paths(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_envs.py").write_text("from rlaif_environments.pyfunc.env import PyFunc as Mine\nx = 3\n")
    assert environment_class("my_envs:Mine").name == "pyfunc"
    with pytest.raises(RlaifError, match="module no_such_mod does not import"):
        environment_class("no_such_mod:Env")
    with pytest.raises(RlaifError, match="has no attribute 'Nope'"):
        environment_class("my_envs:Nope")
    with pytest.raises(RlaifError, match="is 3, not an Environment subclass"):
        environment_class("my_envs:x")


def test_environment_arguments_are_checked():
    with pytest.raises(RlaifError, match=r"environment 'pyfunc': bad argument env.args.generatd: .*valid arguments: "
                                         r"data, generated"):
        load_environment("pyfunc", {"generatd": 5})
