"""Docker sandboxes: one hardened container per sandbox, running the executor under tini.

Hardening, all on by default: no network (`--network none`), read-only root filesystem with tmpfs
`/work` and `/tmp` of bounded size, all capabilities dropped but the three the executor needs
(KILL, SETUID, SETGID: commands run as uid 1000 with none), `no-new-privileges`, memory (no swap),
CPU and PID limits, a wall-clock lifetime after which the executor ends the container itself, and
an environment that holds nothing of the host's unless config names it.

The executor's socket lives in a host folder bind-mounted into the container, so the engine must run
on this host (the default socket, or DOCKER_HOST pointing at a local engine).

Containers carry the labels `rlaif=1`, `rlaif.run=<run id>`, `rlaif.owner=<host>:<pid>`;
`rlaif sandbox gc` finds and removes those whose owner is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

from docker.errors import DockerException, ImageNotFound

from rlaif.sandbox.base import SOCKET_ROOT, WORK, Limits, Sandbox, SandboxError
from rlaif.sandbox.engine import docker_client
from rlaif.sandbox.images import missing_image_fix

EXECUTOR = Path(__file__).with_name("executor.py")
SANDBOX_UID = 1000
GRADER_UID = 1001
"""The trusted side of a paired exec (a grading harness): another uid than the commands'."""
ZYGOTE_UID = 1002
"""The real uid of the executor's zygote, which forks every command (no process runs as it)."""
START_TIMEOUT_S = 30.0


def owner_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class DockerSandbox(Sandbox):
    backend = "docker"

    def __init__(self, sandbox_id: str, socket_dir: Path, limits: Limits, container) -> None:
        super().__init__(sandbox_id, socket_dir / "executor.sock", limits)
        self.socket_dir = socket_dir
        self.container = container

    @classmethod
    async def start(cls, image: str, limits: Limits, run_id: str = "adhoc") -> DockerSandbox:
        """Start a container from `image` and wait until its executor answers. Raises SandboxError."""
        sandbox_id = uuid.uuid4().hex[:12]
        SOCKET_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
        socket_dir = Path(tempfile.mkdtemp(prefix=f"{sandbox_id}-", dir=SOCKET_ROOT))
        create = asyncio.ensure_future(asyncio.to_thread(_run_container, image, limits, run_id, sandbox_id, socket_dir))
        try:
            container = await asyncio.shield(create)
        except BaseException:
            # Interrupted while the engine creates the container: it will exist anyway, so remove it.
            with contextlib.suppress(Exception):
                await asyncio.to_thread((await create).remove, force=True)
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        sandbox = cls(sandbox_id, socket_dir, limits, container)
        return await sandbox.ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        next_state_check = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if self.socket_path.exists():
                if await self.alive(timeout=1.0):
                    return
                self.dead = False
            elif time.monotonic() > next_state_check:
                next_state_check = time.monotonic() + 0.5
                if not await asyncio.to_thread(self._running):
                    logs = (await asyncio.to_thread(self.container.logs, tail=5)).decode(errors="replace").strip()
                    raise SandboxError(f"sandbox {self.id} exited at start: {logs or 'no output'}")
            await asyncio.sleep(0.005)
        raise SandboxError(f"sandbox {self.id}: the executor did not answer within {START_TIMEOUT_S:.0f} s")

    def _running(self) -> bool:
        try:
            self.container.reload()
        except DockerException:
            return False
        return self.container.status in ("created", "running")

    async def _stop(self) -> None:
        with contextlib.suppress(DockerException):  # already gone; `rlaif sandbox gc` covers a refusal
            await asyncio.to_thread(self.container.remove, force=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def _run_container(image: str, limits: Limits, run_id: str, sandbox_id: str, socket_dir: Path):
    client = docker_client()
    try:
        # create + start, never `run`: docker-py's run pulls a missing image from a registry.
        container = client.containers.create(
            image,
            entrypoint=["tini", "--", "python3", "-I", "-S", "/opt/rlaif/executor.py"],
            command=["--socket", "/run/rlaif/executor.sock", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                     "--grader-uid", str(GRADER_UID), "--zygote-uid", str(ZYGOTE_UID),
                     "--lifetime", str(limits.lifetime_s)],
            name=f"rlaif-{sandbox_id}",
            hostname="sandbox",
            user="0:0",
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            cap_add=["KILL", "SETUID", "SETGID"],
            security_opt=["no-new-privileges"],
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            nano_cpus=int(limits.cpus * 1e9),
            pids_limit=limits.pids,
            tmpfs={
                WORK: f"rw,exec,nosuid,nodev,size={limits.work_mb}m,uid={SANDBOX_UID},gid={SANDBOX_UID},mode=0755",
                "/tmp": f"rw,exec,nosuid,nodev,size={limits.tmp_mb}m,mode=1777",
            },
            volumes={
                str(socket_dir): {"bind": "/run/rlaif", "mode": "rw"},
                str(EXECUTOR): {"bind": "/opt/rlaif/executor.py", "mode": "ro"},
            },
            environment={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            labels={"rlaif": "1", "rlaif.run": run_id, "rlaif.owner": owner_label(), "rlaif.sandbox": sandbox_id},
        )
    except ImageNotFound:
        raise SandboxError(f"image {image} is not in the Docker engine; {missing_image_fix(image)}") from None
    except DockerException as err:
        raise SandboxError(f"cannot create a sandbox from {image}: {err}") from None
    try:
        container.start()
        return container
    except DockerException as err:
        container.remove(force=True)
        raise SandboxError(f"cannot start a sandbox from {image}: {err}") from None
