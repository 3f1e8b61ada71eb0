"""A warm pool of sandboxes per image: started ahead of demand, checked before hand-out, never reused
across trajectories unless asked.

Two ways to ask: `reuse` (config) keeps a healthy sandbox as it is, for callers that do not need a clean
one; `recycle` (per hand-out) resets it first (`Sandbox.reset`: every process killed, scratch folders emptied)
and keeps it only when the reset says nothing survived, else retires it. Graders recycle: one answer's
leftovers never reach the next, and the next answer skips a sandbox start.

`acquire()` hands out a sandbox that answered a ping just now; a dead one is dropped and replaced.
`run()` is the one-shot path (fresh sandbox, optional files, one command) and retries infrastructure
failures on a fresh sandbox up to `infra_retries` times; the command's own failures are the answer
and are never retried. Counters in `stats` say what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from rlaif.core.config import SandboxConfig
from rlaif.errors import RlaifError
from rlaif.sandbox.base import ExecResult, Limits, Sandbox, SandboxError
from rlaif.sandbox.engine import docker_client
from rlaif.sandbox.images import DEFAULT_IMAGE, resolve_image


async def start_sandbox(backend: str, image: str, limits: Limits, run_id: str = "adhoc") -> Sandbox:
    """Start one sandbox on the named backend (`docker` or `local`). Raises SandboxError."""
    if backend == "docker":
        from rlaif.sandbox.docker_backend import DockerSandbox

        return await DockerSandbox.start(image, limits, run_id)
    if backend == "local":
        from rlaif.sandbox.local_backend import LocalSandbox

        return await LocalSandbox.start(limits, run_id)
    raise SandboxError(f"unknown sandbox backend {backend!r}; use 'docker' or 'local'")


class SandboxPool:
    """Keeps `size` sandboxes of one image started ahead of demand. Use as `async with`."""

    def __init__(
        self,
        image: str,
        limits: Limits = Limits(),
        *,
        size: int = 2,
        backend: str = "docker",
        run_id: str = "adhoc",
        infra_retries: int = 2,
        reuse: bool = False,
        max_starting: int = 4,
    ) -> None:
        self.image, self.limits, self.size, self.backend, self.run_id = image, limits, size, backend, run_id
        self.infra_retries, self.reuse = infra_retries, reuse
        self.stats: Counter[str] = Counter()
        self._ready: asyncio.Queue[Sandbox | BaseException] = asyncio.Queue()
        self._starting = 0
        self._waiting = 0
        self._failures_in_a_row = 0
        self._next_start = 0.0
        self._start_slots = asyncio.Semaphore(max_starting)
        self._in_use: set[Sandbox] = set()
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    async def __aenter__(self) -> SandboxPool:
        self._refill()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _refill(self) -> None:
        """Start sandboxes until ready + starting reaches `size` (and one per waiting caller)."""
        if self._closed:
            return
        wanted = self.size + self._waiting
        while self._ready.qsize() + self._starting < wanted:
            self._starting += 1
            self._spawn(self._start_one())

    async def _start_one(self) -> None:
        try:
            await asyncio.sleep(max(0.0, self._next_start - time.monotonic()))  # back off after failures
            async with self._start_slots:
                sandbox = await start_sandbox(self.backend, self.image, self.limits, self.run_id)
            self.stats["started"] += 1
            self._failures_in_a_row = 0
            if self._closed:
                await sandbox.close()
            else:
                self._ready.put_nowait(sandbox)
        except RlaifError as err:  # SandboxError, or no engine at all
            self.stats["start_failures"] += 1
            self._failures_in_a_row += 1
            self._next_start = time.monotonic() + min(5.0, 0.1 * 2 ** self._failures_in_a_row)
            self._ready.put_nowait(err)  # the caller waiting for this sandbox gets the reason
        finally:
            self._starting -= 1

    async def acquire(self) -> Sandbox:
        """A live sandbox for one trajectory. Raises SandboxError when sandboxes cannot be started."""
        while True:
            self._waiting += 1
            self._refill()
            try:
                item = await self._ready.get()
            finally:
                self._waiting -= 1
            self._refill()
            if isinstance(item, BaseException):
                raise item
            now = time.monotonic()
            too_old = now - item.created > 0.9 * self.limits.lifetime_s
            if not too_old and (now - item.reset_at < 1.0 or await item.alive()):  # a reset just now is a ping
                self._in_use.add(item)
                return item
            self.stats["discarded_dead"] += 1
            self._spawn(item.close())

    async def release(self, sandbox: Sandbox, *, recycle: bool = False) -> None:
        """Give a sandbox back: closed (in the background); kept warm when `reuse` is on and it is healthy; or,
        with `recycle`, reset and kept when the reset leaves it clean."""
        self._in_use.discard(sandbox)
        if not self._closed and not sandbox.dead:
            if recycle:
                if await sandbox.reset():
                    self.stats["recycled"] += 1
                    self._ready.put_nowait(sandbox)
                    return
                self.stats["retired_unclean"] += 1
            elif self.reuse and await sandbox.alive():
                self._ready.put_nowait(sandbox)
                return
        self._spawn(sandbox.close())

    @contextlib.asynccontextmanager
    async def sandbox(self, *, recycle: bool = False) -> AsyncIterator[Sandbox]:
        """`async with pool.sandbox() as sb:` acquire, use, release (reset and kept for reuse with `recycle`)."""
        sandbox = await self.acquire()
        try:
            yield sandbox
        finally:
            await self.release(sandbox, recycle=recycle)

    async def run(
        self,
        cmd: str | Sequence[str],
        *,
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        recycle: bool = False,
        **options: Any,
    ) -> ExecResult:
        """One command in a fresh sandbox (with `files` written to /work first); infra failures retried on another.
        `recycle` resets the sandbox for reuse afterwards; `options` go to `Sandbox.exec` (`peer`, `raw`, ...)."""
        result = ExecResult(status="infra_error", error="not run")
        for attempt in range(self.infra_retries + 1):
            if attempt:
                self.stats["infra_retries"] += 1
            try:
                async with self.sandbox(recycle=recycle) as sandbox:
                    if files:
                        await sandbox.write_files(files)
                    result = await sandbox.exec(cmd, timeout=timeout, stdin=stdin, env=env, **options)
            except SandboxError as err:
                result = ExecResult(status="infra_error", error=str(err))
            if result.status != "infra_error":
                return result
        self.stats["infra_failures"] += 1
        return result

    async def settle(self) -> None:
        """Wait until every start and close this pool has under way is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop starting, close every sandbox this pool started, and wait until they are gone."""
        self._closed = True
        await self.settle()
        leftovers = list(self._in_use)
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if isinstance(item, Sandbox):
                leftovers.append(item)
        await asyncio.gather(*(s.close() for s in leftovers), return_exceptions=True)
        self._in_use.clear()


class SandboxPools:
    """One warm pool per image, created on first use (inside a running event loop), closed together.

    `image` (config `sandbox.image`) stands in for `DEFAULT_IMAGE`, the image of every environment and task that
    names none of its own (`Environment.image`), so a config can move them all to another image."""

    def __init__(self, limits: Limits = Limits(), *, backend: str = "docker", size: int = 2, run_id: str = "adhoc",
                 infra_retries: int = 2, reuse: bool = False, image: str = DEFAULT_IMAGE) -> None:
        self.limits, self.backend, self.size, self.run_id, self.image = limits, backend, size, run_id, image
        self.infra_retries, self.reuse = infra_retries, reuse
        self.pools: dict[str, SandboxPool] = {}

    @classmethod
    def from_config(cls, config: SandboxConfig, run_id: str = "adhoc") -> SandboxPools:
        return cls(Limits.from_config(config), backend=config.backend, size=config.pool_size, run_id=run_id,
                   infra_retries=config.infra_retries, reuse=config.reuse, image=config.image)

    def get(self, image: str) -> SandboxPool:
        """The pool of `image` (of `sandbox.image` for `DEFAULT_IMAGE`)."""
        image = resolve_image(image, self.image)
        if image not in self.pools:
            self.pools[image] = SandboxPool(image, self.limits, size=self.size, backend=self.backend,
                                            run_id=self.run_id, infra_retries=self.infra_retries, reuse=self.reuse)
            self.pools[image]._refill()
        return self.pools[image]

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self.pools.values()))
        self.pools.clear()

    async def __aenter__(self) -> SandboxPools:
        if self.backend == "docker":
            await asyncio.to_thread(docker_client)  # no engine: one clear error now, not a hang later
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
