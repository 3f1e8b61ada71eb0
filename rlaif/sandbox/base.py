"""The sandbox interface: exec with a timeout, files in and out, a diff of the work tree, liveness, close.

Both backends (Docker, bubblewrap) run the same in-sandbox executor (`executor.py`) and differ only
in how they start and stop it; everything here talks to that executor over its Unix socket.

Every exec returns an `ExecResult` with a failure kind. `infra_error` means the sandbox, not the
command, failed (it died, stopped answering): the sandbox is then marked dead and should be replaced.
The other kinds are the command's own outcome and are never retried.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from typing_extensions import Self

from rlaif.core.config import SandboxConfig
from rlaif.errors import RlaifError
from rlaif.sandbox.treediff import tree_diff

ExecStatus = Literal["ok", "nonzero_exit", "timeout", "oom", "output_truncated", "infra_error"]
GRACE_S = 1.0
"""How long past a command's own timeout the host waits for the executor's answer before it calls
the sandbox dead. The executor kills the command at the timeout; this covers the kill and the reply."""
WORK = "/work"
SOCKET_ROOT = Path(tempfile.gettempdir()) / "rlaif-sandboxes"
"""Host folder holding one sub-folder per sandbox, with its executor socket (both backends)."""
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": WORK,
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}


class SandboxError(RlaifError):
    """A sandbox could not be started or could not do a file operation (an infrastructure failure)."""


class ExecResult(BaseModel):
    """How one command ended. `exit_code` is None when the command never reported one."""

    status: ExecStatus
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    truncated: bool = False
    error: str | None = None
    """What went wrong, for infra_error."""
    output: bytes = Field(default=b"", exclude=True)
    """The stdout as bytes, only for an exec asked `raw=True` (a binary protocol); never serialised."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Limits:
    """Per-sandbox resource limits and defaults (the sandbox section of the config, resolved)."""

    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 128
    timeout_s: float = 30.0
    max_output_bytes: int = 1 << 20
    work_mb: int = 256
    tmp_mb: int = 64
    lifetime_s: float = 3600.0
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra variables every command sees (config passes host variables by name; nothing else leaks)."""

    @classmethod
    def from_config(cls, config: SandboxConfig) -> Limits:
        """The limits a sandbox config asks for, with `env_passthrough` names looked up in the host env."""
        return cls(
            memory_mb=config.memory_mb, cpus=config.cpus, pids=config.pids, timeout_s=config.timeout_s,
            max_output_bytes=config.max_output_bytes, work_mb=config.work_mb, tmp_mb=config.tmp_mb,
            lifetime_s=config.lifetime_s,
            env={name: os.environ[name] for name in config.env_passthrough if name in os.environ},
        )


class Sandbox:
    """A started sandbox. Subclasses start the executor and implement `_stop`."""

    backend = "abstract"

    def __init__(self, sandbox_id: str, socket_path: Path, limits: Limits) -> None:
        self.id = sandbox_id
        self.socket_path = socket_path
        self.limits = limits
        self.dead = False
        self.created = time.monotonic()
        self.reset_at = 0.0
        """When a reset last left it clean (monotonic seconds; 0: never): a hand-out just after needs no ping."""

    async def exec(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        cwd: str = WORK,
        max_output: int | None = None,
        peer: Sequence[str] | None = None,
        raw: bool = False,
        until_exit: bool = False,
        preload: bool = False,
    ) -> ExecResult:
        """Run a command (a string goes through `/bin/sh -c`) and say how it ended. Never raises.

        With `peer`, the command is the trusted side of a paired exec (see `executor.py`): it runs as the
        grader uid with a pipe to `peer`, which runs as the commands' uid in `cwd` and never sees the stdin.
        With `until_exit`, the output is what the command wrote before it exited: processes it left behind add
        nothing and delay nothing (graders ask for this). With `preload`, a `python3 -I -S -c SOURCE` command's
        SOURCE (and the peer's) is no secret: the sandbox may keep it compiled for the commands after this one."""
        header, out, err = await self._request(cmd, timeout=timeout, stdin=stdin, env=env, cwd=cwd,
                                               max_output=max_output, peer=peer, until_exit=until_exit,
                                               preload=preload)
        return ExecResult(
            status=header["status"], exit_code=header.get("exit_code"),
            stdout="" if raw else out.decode(errors="replace"), stderr=err.decode(errors="replace"),
            duration_s=header.get("duration_s", 0.0), truncated=header.get("truncated", False),
            error=header.get("error") if header["status"] == "infra_error" else None, output=out if raw else b"",
        )

    async def _request(self, cmd, *, timeout, stdin, env, cwd, max_output, peer=None, until_exit=False,
                       preload=False) -> tuple[dict, bytes, bytes]:
        timeout = self.limits.timeout_s if timeout is None else timeout
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        environment = {**BASE_ENV, **self.limits.env, **(env or {})}
        request = {
            "op": "exec", "argv": argv, "timeout": timeout, "cwd": "/" if peer else cwd, "stdin_len": len(stdin),
            "env": environment, "max_output": self.limits.max_output_bytes if max_output is None else max_output,
        }
        if peer is not None:
            request["peer"] = {"argv": list(peer), "env": environment, "cwd": cwd}
        for flag, value in (("until_exit", until_exit), ("preload", preload)):
            if value:
                request[flag] = True
        start = time.monotonic()
        try:
            return await asyncio.wait_for(self._call(request, stdin), timeout + GRACE_S)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.dead = True
            what = "did not answer in time" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
            return {"status": "infra_error", "error": f"sandbox {self.id}: {what}",
                    "duration_s": time.monotonic() - start}, b"", b""

    async def _call(self, request: dict, payload: bytes = b"") -> tuple[dict, bytes, bytes]:
        reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        try:
            writer.write(json.dumps(request).encode() + b"\n" + payload)
            await writer.drain()
            header = json.loads(await reader.readline())
            out = await reader.readexactly(header.get("stdout_len", 0))
            err = await reader.readexactly(header.get("stderr_len", 0))
        finally:
            writer.close()
        if header.get("status") == "infra_error":
            self.dead = True
        return header, out, err

    async def alive(self, timeout: float = 2.0) -> bool:
        """True when the executor answers a ping within `timeout` seconds."""
        header = await self._op("ping", timeout)
        return header is not None and header.get("status") == "ok"

    async def reset(self, timeout: float = 30.0) -> bool:
        """Make this sandbox as good as fresh for the next user (every process killed, /work, /tmp and
        /dev/shm emptied). False when it could not be (something survived, or it did not answer): retire it."""
        header = await self._op("reset", timeout)
        clean = header is not None and header.get("status") == "ok" and header.get("clean") is True
        self.reset_at = time.monotonic() if clean else 0.0
        return clean

    async def _op(self, op: str, timeout: float) -> dict | None:
        """The executor's answer to a request without a command, or None (and the sandbox dead) without one."""
        if self.dead:
            return None
        try:
            header, _, _ = await asyncio.wait_for(self._call({"op": op}), timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            self.dead = True
            return None
        return header

    async def write_files(self, files: Mapping[str, bytes | str], dest: str = WORK) -> None:
        """Write files (paths relative to `dest`) as the sandbox user. Raises SandboxError."""
        await self._untar(_tar(files), dest)

    async def upload_dir(self, local: Path, dest: str = WORK) -> None:
        """Copy a local directory's contents into `dest`. Raises SandboxError."""
        local = Path(local)
        files = {str(p.relative_to(local)): p.read_bytes() for p in sorted(local.rglob("*")) if p.is_file()}
        await self.write_files(files, dest)

    async def read_file(self, path: str, max_bytes: int = 64 << 20) -> bytes:
        """The bytes of one file. Raises SandboxError (missing file included)."""
        header, out, err = await self._file_op(["cat", "--", path], max_bytes)
        if header["status"] != "ok":
            raise SandboxError(f"cannot read {path} in sandbox {self.id}: {err.decode(errors='replace').strip()}")
        return out

    async def read_tree(self, path: str = WORK, max_bytes: int = 64 << 20) -> dict[str, bytes]:
        """Every regular file under `path`, by path relative to it. Raises SandboxError."""
        header, out, err = await self._file_op(["tar", "-c", "-C", path, "."], max_bytes)
        if header["status"] != "ok":
            raise SandboxError(f"cannot read {path} in sandbox {self.id}: {err.decode(errors='replace').strip()}")
        tree = {}
        with tarfile.open(fileobj=io.BytesIO(out)) as archive:
            for member in archive:
                if member.isfile():
                    tree[os.path.normpath(member.name)] = archive.extractfile(member).read()
        return tree

    async def diff(self, before: Mapping[str, bytes], path: str = WORK) -> str:
        """A unified diff from the snapshot `before` (from `read_tree`) to the tree as it is now."""
        return tree_diff(before, await self.read_tree(path))

    async def _untar(self, data: bytes, dest: str) -> None:
        header, _, err = await self._request(["tar", "-x", "--no-same-owner", "-C", dest], timeout=60, stdin=data,
                                             env=None, cwd="/", max_output=1 << 16)
        if header["status"] != "ok":
            raise SandboxError(f"cannot write files to {dest} in sandbox {self.id}: "
                               f"{header.get('error') or err.decode(errors='replace').strip()}")

    async def _file_op(self, argv: list[str], max_bytes: int) -> tuple[dict, bytes, bytes]:
        header, out, err = await self._request(argv, timeout=60, stdin=b"", env=None, cwd="/", max_output=max_bytes)
        if header["status"] == "output_truncated":
            raise SandboxError(f"{' '.join(argv)} in sandbox {self.id} produced more than {max_bytes} bytes")
        return header, out, err

    async def ready(self) -> Self:
        """Wait until the executor answers (`_wait_ready`); on any failure close the sandbox and re-raise."""
        try:
            await self._wait_ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def _wait_ready(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Stop the sandbox and remove everything it left on the host. Safe to call twice."""
        self.dead = True
        await self._stop()

    async def _stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _tar(files: Mapping[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
