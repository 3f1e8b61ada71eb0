"""The explicit package list in pyproject.toml covers every package folder (it must be explicit because
`environments/` and `rewards/` install under other names)."""

from pathlib import Path

import pytest
import tomllib

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, mapping = set(config["packages"]), config["package-dir"]
    for name, folder in {"rlaif": "rlaif", **mapping}.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            package = ".".join([name, *relative.parts])
            assert package in listed, f"add {package!r} to [tool.setuptools] packages in pyproject.toml"
