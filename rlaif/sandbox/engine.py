"""The Docker engine connection, with the one error users see when there is none."""

from __future__ import annotations

import functools

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
