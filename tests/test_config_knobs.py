"""Every config knob acts, or does not exist: each field of every config section is read by some code.

"Read" is found by scanning the source of rlaif/ (but config.py, where fields are declared), rewards/ and
environments/: an attribute load `x.field` on anything but `self`, or `config[...]["field"]`-style keys on an
expression that names a config. A name shared with unrelated code can hide a dead knob; it cannot invent one.
"""

from __future__ import annotations

import ast
import asyncio
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from rlaif.core.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("rlaif", "rewards", "environments")
READ_ELSEWHERE = {
    "learner.scale_rewards": "read by the LearnerConfig.scales_rewards property in rlaif/core/config.py",
}


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, field name) of every field under `model`, into sections and lists or optionals of them."""
    for name, info in model.model_fields.items():
        yield prefix + name, name
        for kind in {info.annotation, *typing.get_args(info.annotation)}:
            for inner in (kind, *typing.get_args(kind)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from _fields(inner, f"{prefix}{name}.")


def _reads() -> set[str]:
    names: set[str] = set()
    for root in SOURCES:
        for path in (REPO / root).rglob("*.py"):
            if path == REPO / "rlaif/core/config.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                        names.add(node.attr)
                elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                      and "config" in ast.unparse(node.value).lower()):
                    names.add(str(node.slice.value))
    return names


@pytest.mark.unit
def test_every_config_field_is_read_somewhere():
    reads = _reads()
    dead = sorted({key for key, name in _fields(Config) if name not in reads and key not in READ_ELSEWHERE})
    assert not dead, f"config fields no code reads (wire them or remove them): {dead}"


@pytest.mark.unit
def test_the_allow_list_names_real_fields():
    assert set(READ_ELSEWHERE) <= {key for key, _ in _fields(Config)}


@pytest.mark.docker
def test_sandbox_image_replaces_the_default_image_but_not_a_named_one():
    from rlaif.env import Environment
    from rlaif.sandbox.pool import SandboxPools

    config = load_config(None, ["model.path=m", "sandbox.image=rlaif/nosuch:latest", "sandbox.pool_size=0",
                                "sandbox.infra_retries=0"]).sandbox

    async def go():
        async with SandboxPools.from_config(config, run_id="knobs") as pools:
            named = pools.get("rlaif/base:named").image
            return named, await pools.get(Environment.image).run(["true"])

    named, result = asyncio.run(go())
    assert named == "rlaif/base:named"
    assert result.status == "infra_error"
    assert result.error == ("image rlaif/nosuch:latest is not in the Docker engine; build it (`docker build -t "
                            "rlaif/nosuch:latest ...` FROM rlaif/base:latest) or tag one as it (`docker tag IMAGE "
                            "rlaif/nosuch:latest`)")
