"""Local sandboxes: the executor under bubblewrap, for machines with no Docker engine.

Each sandbox is one `bwrap` process running the host's `/usr/bin/python3` on `executor.py`, in new
network, pid, ipc, uts and cgroup namespaces: no network but a loopback of its own, and bwrap's
reaper as PID 1, so the executor's kill(-1) after each exec reaches every command process and
nothing else. `start` checks that pid namespace and refuses a sandbox without one: in the host's,
that kill(-1) from root with CAP_KILL would kill every process on the machine.

The root is an empty read-only tmpfs holding read-only binds of the host's `/usr` and `/etc` (and
its `/bin`, `/lib`, `/lib64`, `/sbin`, mirrored as symlinks or binds), a fresh `/proc` (with `/proc/sys`
read-only), a minimal `/dev`, no `/sys`, and size-bounded tmpfs `/work`, `/tmp` and `/dev/shm` (mode
1777). The executor keeps only CAP_KILL, CAP_SETUID and CAP_SETGID and runs each command as uid/gid
65534 (nobody) with no capabilities and no_new_privs (bwrap sets it; every bind is nosuid); its socket
folder is root's and mode 0700, out of the commands' reach. bwrap starts with an environment of PATH
and LANG only, so nothing of the host's reaches it; `--die-with-parent` ends the sandbox when the
thread that started it dies.

Needs root: the commands' uid must differ from the executor's, and a user namespace made by bwrap
maps one uid only, so no user namespace is used and uid 65534 in the sandbox is the host's nobody.

Limits come from rlimits, not cgroups: every command runs under RLIMIT_AS=<memory>, RLIMIT_NPROC=<pids> and
RLIMIT_FSIZE=<work size> (the executor's `--rlimit`). What that means:
- RLIMIT_NPROC counts every process and thread of the real uid on the whole machine, so all local
  sandboxes (and anything else running as nobody on the host) share one `pids` budget.
- RLIMIT_AS bounds address space, not resident memory: runtimes that reserve large virtual ranges
  (JVM, Go, some allocators) may fail to start under a limit that their real use would fit.
- Running out of memory is never reported as `oom` (the executor reads cgroup counters, which do not
  apply here): a command sees a failed allocation and ends as it does on one (Python's MemoryError
  gives `nonzero_exit`).
- `cpus` is not enforced; only the wall-clock timeout bounds CPU use.

What it does NOT protect against, compared with the Docker backend:
- The kernel attack surface is the host's, with no seccomp filter (Docker applies its default profile)
  and no masking of /proc files Docker hides (kcore, keys, timer_list...; their own modes still apply).
- The host's `/usr` and `/etc` are visible: anything world-readable there (configs, installed tools,
  their versions) can be read, and host binaries run as they are. Docker shows a separate image.
- No memory cgroup: memory is bounded per process, not per sandbox, and tmpfs pages (/work, /tmp,
  /dev/shm) are host memory outside any limit but their sizes; many processes can each use `memory_mb`
  up to the shared process budget.
- Commands share the uid nobody with other sandboxes and host processes running as nobody (the pid
  and mount namespaces hide those processes and files, but rlimit accounting is shared).
- The capability bounding set is left as the host's (bwrap drops it only inside a user namespace);
  no_new_privs and nosuid binds keep commands from regaining capabilities through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from rlaif.sandbox.base import SOCKET_ROOT, WORK, Limits, Sandbox, SandboxError

EXECUTOR = Path(__file__).with_name("executor.py")
SANDBOX_UID = 65534
GRADER_UID = 65533
"""The trusted side of a paired exec (a grading harness): an otherwise unused host uid, not nobody."""
ZYGOTE_UID = 65532
"""The real uid of the executor's zygote, which forks every command: another otherwise unused host uid."""
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PATH = "/usr/local/bin:/usr/bin:/bin"
HOST_PYTHON = "/usr/bin/python3"
RO_DIRS = ("/usr", "/etc")
MIRRORED = ("/bin", "/lib", "/lib64", "/sbin")
"""Top-level paths copied from the host as they are: a symlink stays a symlink, a directory is bound read-only."""
LOG_NAME = "bwrap.log"
NOT_INSTALLED = "bubblewrap is not installed; apt-get install bubblewrap (or use sandbox.backend=docker)"


class LocalSandbox(Sandbox):
    backend = "local"

    def __init__(self, sandbox_id: str, socket_dir: Path, limits: Limits, process: asyncio.subprocess.Process,
                 info_fd: int) -> None:
        super().__init__(sandbox_id, socket_dir / "executor.sock", limits)
        self.socket_dir = socket_dir
        self.process = process
        self.info_fd = info_fd
        self.init_pid: int | None = None
        """Host pid of the sandbox's PID 1 (bwrap's reaper), from `--info-fd`; None until read."""

    @classmethod
    async def start(cls, limits: Limits, run_id: str = "adhoc") -> LocalSandbox:
        """Start bwrap and wait until its executor answers. Raises SandboxError.

        `run_id` is accepted for the same signature as the Docker backend; a bwrap process dies with
        this one, so there is nothing to label for a later garbage collection.
        """
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError(NOT_INSTALLED)
        if os.geteuid() != 0:
            raise SandboxError("the local sandbox backend must run as root (commands run as uid 65534 under an "
                               "executor running as root); run as root or use sandbox.backend=docker")
        python = sandbox_python()
        sandbox_id = uuid.uuid4().hex[:12]
        SOCKET_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
        socket_dir = Path(tempfile.mkdtemp(prefix=f"{sandbox_id}-", dir=SOCKET_ROOT))
        info_read, info_write = os.pipe()
        try:
            with open(socket_dir / LOG_NAME, "wb") as log:
                process = await asyncio.create_subprocess_exec(
                    *bwrap_argv(bwrap, python, limits, socket_dir, info_write),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(info_write,),
                    env={"PATH": PATH, "LANG": "C.UTF-8"}, start_new_session=True,
                )
        except BaseException as err:
            os.close(info_read)
            shutil.rmtree(socket_dir, ignore_errors=True)
            if isinstance(err, OSError):
                raise SandboxError(f"cannot start bubblewrap: {err}") from None
            raise
        finally:
            os.close(info_write)
        sandbox = cls(sandbox_id, socket_dir, limits, process, info_read)
        return await sandbox.ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise SandboxError(f"sandbox {self.id} exited at start (code {self.process.returncode}): "
                                   f"{self._log_tail() or 'no output'}")
            if self.socket_path.exists():
                if await self.alive(timeout=1.0):
                    self._read_info()
                    self._check_pid_namespace()
                    return
                self.dead = False
            await asyncio.sleep(0.005)
        raise SandboxError(f"sandbox {self.id}: the executor did not answer within {START_TIMEOUT_S:.0f} s: "
                           f"{self._log_tail() or 'bwrap wrote nothing'}")

    def _read_info(self) -> None:
        """Read bwrap's `--info-fd` JSON ({"child-pid": N, ...}); it is written before the executor starts."""
        if self.info_fd < 0:
            return
        os.set_blocking(self.info_fd, False)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(self.info_fd, 4096):
                data += chunk
        os.close(self.info_fd)
        self.info_fd = -1
        with contextlib.suppress(ValueError, AttributeError):
            self.init_pid = int(json.loads(data)["child-pid"])

    def _check_pid_namespace(self) -> None:
        """Refuse a sandbox whose PID 1 is not in a pid namespace of its own. Raises SandboxError.

        The executor runs as root with CAP_KILL and calls kill(-1) after every exec: in the host's pid
        namespace that would kill every process on the machine.
        """
        try:
            own = self.init_pid is not None and os.readlink(f"/proc/{self.init_pid}/ns/pid") != os.readlink(
                "/proc/self/ns/pid")
        except OSError:
            own = False
        if not own:
            raise SandboxError(f"sandbox {self.id}: bubblewrap did not give it a pid namespace of its own "
                               f"(PID 1 is host pid {self.init_pid}); refusing to run commands in it")

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            data = (self.socket_dir / LOG_NAME).read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode(errors="replace").strip()

    async def _stop(self) -> None:
        if self.init_pid is None:
            self._read_info()  # a start that failed before the executor answered may still have it
        if self.process.returncode is None:
            # SIGKILL to the sandbox's PID 1 makes the kernel kill everything in its pid namespace
            # before bwrap (its parent) sees it exit; killing bwrap alone leaves that to PDEATHSIG.
            if self.init_pid is not None and _is_child_of(self.init_pid, self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.init_pid, signal.SIGKILL)
            else:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        if self.info_fd >= 0:
            os.close(self.info_fd)
            self.info_fd = -1
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def sandbox_python() -> str:
    """The host python3 the executor runs on; it must live under a path the sandbox binds. Raises SandboxError."""
    candidates = [HOST_PYTHON, shutil.which("python3", path=PATH), shutil.which("python3")]
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            real = os.path.realpath(candidate)
            if any(real.startswith(root + "/") for root in RO_DIRS):
                return candidate
    raise SandboxError("the local sandbox backend needs a python3 under /usr on the host (apt-get install "
                       "python3-minimal); a python elsewhere is not visible inside the sandbox")


def bwrap_argv(bwrap: str, python: str, limits: Limits, socket_dir: Path, info_fd: int) -> list[str]:
    """The bwrap command line for one sandbox (see the module docstring for what each part is for)."""
    argv = [
        bwrap,
        # Every namespace but the user one (see the module docstring); the -try form skips a kernel without it.
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", "sandbox",
        "--die-with-parent", "--new-session",
        "--clearenv", "--setenv", "PATH", PATH, "--setenv", "LANG", "C.UTF-8",
        # Order matters: as root bwrap keeps every capability unless told to drop them first.
        "--cap-drop", "ALL", "--cap-add", "CAP_KILL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
        "--info-fd", str(info_fd),
    ]
    for path in RO_DIRS:
        argv += ["--ro-bind", path, path]
    for path in MIRRORED:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += [
        "--proc", "/proc",
        # bwrap leaves /proc/sys writable by uid 0 outside a user namespace: host sysctls (core_pattern).
        "--ro-bind", "/proc/sys", "/proc/sys", "--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger",
        "--dev", "/dev",
        "--size", str(limits.tmp_mb << 20), "--perms", "01777", "--tmpfs", "/tmp",
        "--size", str(limits.tmp_mb << 20), "--perms", "01777", "--tmpfs", "/dev/shm",
        "--size", str(limits.work_mb << 20), "--perms", "01777", "--tmpfs", WORK,
        "--bind", str(socket_dir), "/run/rlaif",
        "--ro-bind", str(EXECUTOR), "/opt/rlaif/executor.py",
        "--remount-ro", "/",
        "--chdir", "/",
        "--",
        python, "-I", "-S", "/opt/rlaif/executor.py",
        "--socket", "/run/rlaif/executor.sock", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--grader-uid", str(GRADER_UID), "--zygote-uid", str(ZYGOTE_UID),
        "--lifetime", str(limits.lifetime_s),
        "--rlimit", f"as={limits.memory_mb << 20}", "--rlimit", f"nproc={limits.pids}",
        "--rlimit", f"fsize={limits.work_mb << 20}",
    ]
    return argv


def _is_child_of(pid: int, parent: int) -> bool:
    """True when `pid` is still a child of `parent` (guards against signalling a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rpartition(")")[2].split()[1]) == parent
