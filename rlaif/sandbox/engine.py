"""The Docker engine connection, with the one error users see when there is none."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import docker
from docker.errors import DockerException

from rlaif.errors import RlaifError


@functools.cache
def docker_client() -> docker.DockerClient:
    """A client for the local engine (DOCKER_HOST or the default socket), API version negotiated."""
    try:
        client = docker.from_env(version="auto", timeout=120)
        client.ping()
    except DockerException as err:
        raise RlaifError(
            f"no Docker engine answers ({type(err).__name__}); run `make setup` (as root it installs and "
            "starts one), start dockerd yourself, or set sandbox.backend=local"
        ) from None
    return client


@dataclass(frozen=True)
class SandboxContainer:
    """One sandbox container as the engine listed it: no per-container inspect, so no race with removal."""

    id: str
    name: str
    status: str
    labels: dict[str, str]


def sandbox_containers(**labels: str) -> list[SandboxContainer]:
    """Containers labelled `rlaif=1` (and `rlaif.<key>=<value>` for each keyword), from a single list call.

    docker-py's `containers.list` inspects each container after listing, and raises NotFound for one removed in
    between; a listing taken while other runs clean up must not fail for that.
    """
    filters = ["rlaif=1", *(f"rlaif.{key}={value}" for key, value in labels.items())]
    return [SandboxContainer(id=c["Id"], name=c["Names"][0].lstrip("/") if c.get("Names") else c["Id"][:12],
                             status=c.get("State", ""), labels=c.get("Labels") or {})
            for c in docker_client().api.containers(all=True, filters={"label": filters})]
