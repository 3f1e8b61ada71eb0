"""Nothing outlives a killed driver: every process it started, and their sandboxes, go when it goes.

`watch_this_process()` (called just before a driver starts its local Ray) marks the environment with
`RLAIF_OWNER=<pid>:<starttime>`, which every process started afterwards inherits (Ray's gcs, raylet and
agents, its workers, vLLM engines and through them anything), and starts a reaper: a separate process
whose stdin is a pipe only the driver holds open. However the driver ends, `kill -9` included, the
kernel closes that pipe; the reaper then stops every process whose /proc/PID/environ carries the mark,
and removes the sandbox containers whose owner process (a Ray worker, say) is now gone.

The mark is read from /proc/PID/environ, the environment a process was started with: a process cannot
drop it by editing its own os.environ, and a process that starts its own watched driver (a test's
`rlaif train` subprocess, say) re-marks its own descendants while still carrying its parent's mark in
/proc, so killing the parent stops the child driver, whose own reaper then cleans up after it.

If the reaper itself was killed too, `sweep_orphans()` (run by `rlaif sandbox gc` and at the start of
`rlaif train`) finds marked processes whose owner is dead and stops them. The starttime in the token
means a reused pid never passes for the dead owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OWNER_VAR = "RLAIF_OWNER"
GRACE_S = 1.0  # after the driver exits, how long its processes get to exit by themselves (a normal ray.shutdown)
TERM_S = 5.0  # after SIGTERM, how long before SIGKILL

_PROC = Path("/proc")
_watched = False
_pipe_write_fd: int | None = None  # held open for the driver's whole life; never closed, never inherited
_reaper: subprocess.Popen | None = None


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, starttime) of a process, from /proc/PID/stat; None when it is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name (field 2) may hold spaces and parentheses
    return fields[0], fields[19]  # fields 3 and 22


def token_of(pid: int) -> str | None:
    """The owner token `<pid>:<starttime>` of a running process, or None when it is gone."""
    stat = _stat(pid)
    return f"{pid}:{stat[1]}" if stat else None


def _alive(pid: int, starttime: str) -> bool:
    """Whether this very process (not a later one with the same pid) still runs; a zombie counts as gone."""
    stat = _stat(pid)
    return stat is not None and stat[1] == starttime and stat[0] != "Z"


def token_alive(token: str) -> bool:
    pid, _, starttime = token.partition(":")
    return pid.isdigit() and _alive(int(pid), starttime)


def _marked() -> dict[int, tuple[str, str]]:
    """Every other running process that carries an owner mark: pid -> (owner token, its own starttime)."""
    prefix = f"{OWNER_VAR}=".encode()
    found = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                stat = _stat(int(entry.name))
                if stat and stat[0] != "Z":
                    found[int(entry.name)] = (item[len(prefix):].decode(errors="replace"), stat[1])
                break
    return found


def describe(pid: int) -> str:
    """`pid 123 (ray::DashboardAgent)`: the command line (as the process retitled it), else its name."""
    try:
        title = (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        title = title or (_PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        title = "?"
    return f"pid {pid} ({title[:77] + '...' if len(title) > 80 else title})"


def _signal_all(procs: dict[int, str], sig: int) -> None:
    for pid, starttime in procs.items():
        if _alive(pid, starttime):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def _wait_gone(procs: dict[int, str], timeout: float) -> dict[int, str]:
    """Wait up to `timeout` s for the processes to exit; returns the ones still running."""
    deadline = time.monotonic() + timeout
    while True:
        left = {pid: start for pid, start in procs.items() if _alive(pid, start)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _stop(procs: dict[int, str]) -> None:
    """SIGTERM, then SIGKILL for whatever still runs after TERM_S seconds."""
    _signal_all(procs, signal.SIGTERM)
    left = _wait_gone(procs, TERM_S)
    _signal_all(left, signal.SIGKILL)
    _wait_gone(left, 2.0)


def _stop_owned_by(is_ours: Callable[[str], bool], grace: float = 0.0) -> list[str]:
    """Stop the marked processes whose owner token satisfies `is_ours`; returns their descriptions.

    Processes that exit by themselves within `grace` seconds are neither signalled nor reported. Rescans
    after each round: a dying raylet or worker may start another (marked) process meanwhile, and an owner
    stopped in one round (a nested driver) makes its own processes orphans for the next.
    """
    def find() -> dict[int, str]:
        return {pid: start for pid, (token, start) in _marked().items() if is_ours(token)}

    if grace:
        _wait_gone(find(), grace)
    stopped: dict[int, str] = {}
    for _ in range(3):
        procs = find()
        if not procs:
            break
        stopped.update((pid, describe(pid)) for pid in procs if pid not in stopped)
        _stop(procs)
    return list(stopped.values())


def sweep_orphans() -> list[str]:
    """Stop the processes on this machine marked by an owner that is gone; returns what it stopped.

    The fallback for a driver whose reaper was killed with it: live runs' processes are not touched.
    """
    return _stop_owned_by(lambda token: not token_alive(token))


def remove_orphan_sandboxes() -> list[str]:
    """Remove the sandbox containers (and their socket folders) whose owner process on this host is gone.

    Narrower than `rlaif.sandbox.gc.collect_garbage()` on purpose: it runs unasked, while other runs may
    be live, so it leaves alone what a live run may be in the middle of (a socket folder whose executor
    is still starting, a container that just exited). Returns the names of the containers removed; works
    (removing nothing) without a Docker engine.
    """
    from rlaif.sandbox.base import SOCKET_ROOT
    from rlaif.sandbox.engine import docker_client, sandbox_containers
    from rlaif.sandbox.gc import owner_alive

    try:
        orphans = [c for c in sandbox_containers() if not owner_alive(c.labels.get("rlaif.owner", ""))]
    except Exception:  # no engine (RlaifError), or it failed mid-listing: nothing removed
        return []

    def remove(container) -> str | None:
        try:
            docker_client().api.remove_container(container.id, force=True)
        except Exception:  # removed meanwhile, or the engine refused: not ours to report
            return None
        sandbox_id = container.labels.get("rlaif.sandbox")
        if sandbox_id and SOCKET_ROOT.is_dir():
            for folder in SOCKET_ROOT.glob(f"{sandbox_id}-*"):
                shutil.rmtree(folder, ignore_errors=True)
        return container.name

    with ThreadPoolExecutor(8) as pool:
        return [name for name in pool.map(remove, orphans) if name]


def _remove_sandboxes_settled(quiet_s: float = 5.0, limit_s: float = 60.0) -> list[str]:
    """`remove_orphan_sandboxes()` once a second until `quiet_s` pass with nothing to remove (or `limit_s`): the
    Docker engine may still be creating containers a killed worker asked for, seconds later on a loaded machine."""
    removed: list[str] = []
    started = last = time.monotonic()
    while time.monotonic() - last < quiet_s and time.monotonic() - started < limit_s:
        found = remove_orphan_sandboxes()
        if found:
            removed += found
            last = time.monotonic()
        time.sleep(1.0)
    return removed


def clean_after_killed_runs() -> tuple[list[str], list[str]]:
    """Stop orphaned processes and remove orphaned sandboxes, saying so on stderr when there were any.

    Returns (process descriptions, container names). Live runs' processes and sandboxes stay.
    """
    stopped = sweep_orphans()
    removed = remove_orphan_sandboxes()
    if stopped or removed:
        print(f"cleaned up after a killed run: stopped {len(stopped)} processes, removed {len(removed)} sandboxes",
              file=sys.stderr, flush=True)
    return stopped, removed


def _close_pipe_in_child() -> None:
    """After a bare fork (multiprocessing, say) the child must not hold the driver's end of the pipe."""
    global _pipe_write_fd
    if _pipe_write_fd is not None:
        with contextlib.suppress(OSError):
            os.close(_pipe_write_fd)
        _pipe_write_fd = None


def watch_this_process() -> None:
    """Mark this process's future descendants and start the reaper that cleans up after it. Idempotent.

    A mark inherited from an ancestor is replaced (see the module docstring): this process's own
    descendants are then stopped when it dies, and it is stopped when its ancestor dies.
    """
    global _watched, _pipe_write_fd, _reaper
    if _watched:
        return
    token = token_of(os.getpid())
    if token is None:  # no /proc: nothing to watch with
        return
    read_fd, write_fd = os.pipe()  # both non-inheritable: subprocesses do not get them unless passed
    env = {key: value for key, value in os.environ.items() if key != OWNER_VAR}  # the reaper is not its own prey
    _reaper = subprocess.Popen([sys.executable, "-m", "rlaif.cluster.reaper", token], stdin=read_fd,
                               stdout=subprocess.DEVNULL, env=env, start_new_session=True, close_fds=True)
    os.close(read_fd)
    _pipe_write_fd = write_fd
    os.register_at_fork(after_in_child=_close_pipe_in_child)
    os.environ[OWNER_VAR] = token
    _watched = True


def _wait_for_eof() -> None:
    while True:
        try:
            if not os.read(0, 4096):
                return
        except InterruptedError:
            continue
        except OSError:
            return


def main(token: str) -> None:
    """The reaper: wait until the driver is gone (its pipe hits EOF), then stop what it left behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver is not for us
    _wait_for_eof()
    while token_alive(token):  # EOF while the driver lives: it closed its end (a daemonizing closerange, say)
        time.sleep(0.5)
    stopped = _stop_owned_by(lambda owner: owner == token, grace=GRACE_S)
    try:
        removed = _remove_sandboxes_settled()
    except Exception:  # the reaper's one line is all it may say; a failure to reach Docker is not worth more
        removed = []
    if stopped or removed:
        print(f"rlaif: the driver (pid {token.partition(':')[0]}) exited; stopped {len(stopped)} processes "
              f"it started and removed {len(removed)} orphaned sandboxes", file=sys.stderr, flush=True)


def _main(argv: Iterable[str]) -> None:
    args = list(argv)
    if len(args) != 1:
        sys.exit("usage: python -m rlaif.cluster.reaper PID:STARTTIME")
    main(args[0])


if __name__ == "__main__":
    _main(sys.argv[1:])
