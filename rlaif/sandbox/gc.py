"""Find and remove what sandboxes left behind: containers labelled `rlaif=1` and socket folders.

By default only orphans go: containers whose owning process (label `rlaif.owner=<host>:<pid>`) is
gone from this host, or that have stopped, and socket folders where no executor answers.
`everything=True` removes every rlaif container, live runs' included; `run_id` removes one run's.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from docker.errors import DockerException

from rlaif.errors import RlaifError
from rlaif.sandbox.base import SOCKET_ROOT
from rlaif.sandbox.engine import docker_client, sandbox_containers


def owner_alive(owner: str) -> bool:
    """Whether the process named by a container's `rlaif.owner` label (host:pid) may still be alive."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's process: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(socket_path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(socket_path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def collect_garbage(everything: bool = False, run_id: str | None = None) -> list[str]:
    """Remove orphaned (or all, or one run's) sandbox containers and dead socket folders.

    Returns the names of what it removed. Works without a Docker engine (socket folders only).
    """
    removed = []
    try:
        containers = sandbox_containers()
    except RlaifError:
        containers = []
    for container in containers:
        labels = container.labels
        orphan = container.status not in ("created", "running") or not owner_alive(labels.get("rlaif.owner", ""))
        if everything or orphan or (run_id is not None and labels.get("rlaif.run") == run_id):
            try:
                docker_client().api.remove_container(container.id, force=True)
                removed.append(container.name)
            except DockerException:  # removed by its owner meanwhile, or the engine refused: not ours to report
                continue
    if SOCKET_ROOT.is_dir():
        for folder in SOCKET_ROOT.iterdir():
            if not _answers(folder / "executor.sock"):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(str(folder))
    return removed
