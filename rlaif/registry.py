"""Environment discovery: the `rlaif.environments` entry-point group, or a `module:Class` path.

A plugin package declares, in its pyproject.toml,

    [project.entry-points."rlaif.environments"]
    my_env = "my_package.env:MyEnvironment"

and `env.name: my_env` in config (or `rlaif env check my_env`) finds it. Every failure (unknown name,
a plugin that does not import, an entry point that is not an Environment subclass) is one RlaifError
naming the plugin, its package and the fix.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from rlaif.env import Environment
from rlaif.errors import RlaifError

GROUP = "rlaif.environments"


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed environment plugins by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def environment_class(name: str) -> type[Environment]:
    """The Environment subclass a name or `module:Class` path refers to."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        where = f"{name!r}"
        package = module_name.split(".")[0]
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except ImportError as err:
            raise RlaifError(f"environment {where}: module {module_name} does not import ({err}); "
                             f"install the package that provides it or fix the path") from None
        except AttributeError:
            raise RlaifError(f"environment {where}: module {module_name} has no attribute {attr!r}; "
                             "point at the Environment subclass as module:Class") from None
    else:
        eps = entry_points()
        if name not in eps:
            known = ", ".join(sorted(eps)) or "none"
            raise RlaifError(f"unknown environment {name!r}; installed: {known}. Install its plugin package "
                             "or give module:Class")
        ep = eps[name]
        package = ep.dist.name if ep.dist else ep.module
        where = f"{name!r} (package {package}, entry point {ep.value})"
        try:
            obj = ep.load()
        except Exception as err:
            raise RlaifError(f"environment plugin {where} failed to import: {type(err).__name__}: {err}; "
                             f"fix or reinstall {package}") from None
    if not (isinstance(obj, type) and issubclass(obj, Environment)):
        raise RlaifError(f"environment {where} is {obj!r}, not an Environment subclass; the entry point must "
                         "name a class that subclasses rlaif.env.Environment (e.g. my_pkg.env:MyEnv)")
    return obj


def load_environment(name: str, args: dict[str, Any] | None = None) -> Environment:
    """Find and construct an environment; its arguments are validated by its own `Args`."""
    return environment_class(name)(**(args or {}))
