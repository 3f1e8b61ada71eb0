"""The sandbox executor: a tiny server that runs inside a sandbox and forks commands on request.

It is started as the sandbox's main process (under an init that reaps orphans) and listens on a Unix
socket in a folder shared with the host. One connection carries one request. Standard library only:
it runs on whatever python3 the sandbox image has, and on the host under bubblewrap.

Why it exists: `docker exec` through the API costs ~5x a plain process start; forking here costs
about the same as a local `subprocess.run`.

Privilege model: the executor runs as root with only CAP_KILL, CAP_SETUID and CAP_SETGID (the sandbox
drops every other capability). Each command runs as an unprivileged uid with no capabilities, so a
command cannot signal the executor, while the executor can kill every process a command left behind,
including ones that escaped their process group with setsid. Execs are serialised: after each one,
every process but the init and the executor is killed (`kill(-1)`), which needs no fork and so works
even when a fork bomb has exhausted the pid limit.

A paired exec (`"peer"` in the request) runs two processes joined by a pipe in each direction: the
request's own command as the *grader* uid (`--grader-uid`, trusted: it gets the stdin and its stdout is
the answer) and the peer as the commands' uid (untrusted: no stdin but the pipe, its output discarded).
The trusted side finds the pipe ends in `RLAIF_CHANNEL` ("READ_FD,WRITE_FD"). Neither uid can signal,
trace or read the other's memory, files or /proc entries; the peer cannot reach the answer at all.

`reset` makes a used sandbox as good as fresh, or says it cannot: every process but init and the
executor is killed, /work, /tmp and /dev/shm are emptied (as the commands' uid, which owns what they
left), and the answer is `clean: false` when anything survives that (a file, a process, a SysV IPC
object), so the caller retires the sandbox instead of reusing it.

Wire format (both directions): one JSON header line, then raw bytes whose lengths the header gives.
  request  {"op": "exec", "argv": [...], "timeout": s, "env": {...}, "cwd": "/work", "stdin_len": n,
            "max_output": bytes, "until_exit": bool?, "peer": {"argv": [...], "env": {...}, "cwd": ...}?}
           + stdin bytes
           |  {"op": "ping"}  |  {"op": "reset"}
  response {"status", "exit_code", "duration_s", "truncated", "stdout_len", "stderr_len", "error"}
            + stdout bytes + stderr bytes
Statuses: ok, nonzero_exit, timeout, oom, output_truncated (the command was stopped when its
output passed max_output), infra_error (the executor could not run it).

What it does not protect against: anything the kernel lets an unprivileged uid do inside the
namespaces and limits the sandbox was started with. The sandbox provides those; this only runs commands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import stat
import subprocess
import threading
import time

OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
READ_CHUNK = 1 << 16
SCRATCH = ("/work", "/tmp", "/dev/shm")
"""What commands can write, and `reset` empties."""
SYSV_IPC = ("/proc/sysvipc/shm", "/proc/sysvipc/msg", "/proc/sysvipc/sem")


def oom_kills() -> int | None:
    """The memory cgroup's OOM-kill count (cgroup v2 or v1), or None where it cannot be read."""
    for path in OOM_COUNTERS:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            continue
    return None


def wipe(folders: tuple[str, ...]) -> None:
    """Empty each folder, whatever modes were set inside it (directories made unreadable are opened up and the
    walk is run again). Meant to run as the uid that owns what is there."""
    for _ in range(2):
        for top in folders:
            for root, dirs, files in os.walk(top, topdown=False):
                for name in files + dirs:
                    path = os.path.join(root, name)
                    try:
                        if not os.path.islink(path) and os.path.isdir(path):
                            os.chmod(path, stat.S_IRWXU)
                            os.rmdir(path)
                        else:
                            os.unlink(path)
                    except OSError:
                        pass
            for root, dirs, _ in os.walk(top):
                for name in dirs:
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(root, name), stat.S_IRWXU)


def kill_everything_else(*children: subprocess.Popen, grace_s: float = 0.5) -> int:
    """SIGKILL every process but init and this one, until none is left. Returns the rounds it took.

    kill(-1) also "succeeds" on zombies, so each round reaps our own children; the init reaps the rest.
    """
    deadline = time.monotonic() + grace_s
    rounds = 0
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return rounds
        rounds += 1
        for child in children:
            child.poll()
        time.sleep(0.001)
    return rounds


class Executor:
    def __init__(self, uid: int, gid: int, wrap: list[str], grader_uid: int | None = None) -> None:
        self.uid, self.gid, self.wrap, self.grader_uid = uid, gid, wrap, grader_uid
        self.lock = threading.Lock()  # one exec at a time: cleanup after an exec kills everything

    def run(self, req: dict, stdin: bytes) -> tuple[dict, bytes, bytes]:
        with self.lock:
            return self._run(req, stdin)

    def reset(self) -> dict:
        """Kill every command's process and empty the scratch folders; `clean` says whether nothing survived."""
        with self.lock:
            kill_everything_else()
            pid = os.fork()  # a forked child, not a new interpreter: the wipe is on every grading's path
            if pid == 0:
                try:
                    os.setgroups([])
                    os.setgid(self.gid)
                    os.setuid(self.uid)
                    wipe(SCRATCH)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            kill_everything_else()
            left = [d for d in SCRATCH if os.path.isdir(d) and os.listdir(d)]
            left += [path for path in SYSV_IPC if _entries(path)]
            alive = [pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) not in (1, os.getpid())]
            left += [f"process {pid}" for pid in alive]
            return {"status": "ok", "clean": not left, "left": left[:10]}

    def _start(self, req: dict, uid: int, **streams) -> subprocess.Popen:
        return subprocess.Popen([*self.wrap, *req["argv"]], cwd=req.get("cwd") or None, env=req.get("env") or {},
                                user=uid, group=uid if uid != self.uid else self.gid, extra_groups=[],
                                start_new_session=True, **streams)

    def _run(self, req: dict, stdin: bytes) -> tuple[dict, bytes, bytes]:
        timeout, cap = float(req.get("timeout", 30)), int(req.get("max_output", 1 << 20))
        peer = req.get("peer")
        if peer is not None and self.grader_uid is None:
            return {"status": "infra_error", "error": "this executor was started without --grader-uid"}, b"", b""
        ooms_before = oom_kills()
        start = time.monotonic()
        channel: list[int] = []
        children: list[subprocess.Popen] = []
        try:
            streams = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if peer is None:
                proc = self._start(req, self.uid, **streams)
            else:
                to_peer, from_peer = os.pipe(), os.pipe()
                channel = [*to_peer, *from_peer]
                children.append(self._start(peer, self.uid, stdin=to_peer[0], stdout=from_peer[1],
                                            stderr=subprocess.DEVNULL))
                req = {**req, "env": {**(req.get("env") or {}), "RLAIF_CHANNEL": f"{from_peer[0]},{to_peer[1]}"}}
                proc = self._start(req, self.grader_uid, pass_fds=(from_peer[0], to_peer[1]), **streams)
        except OSError as err:
            # The command could not start (no such program, bad cwd): that is the caller's command.
            kill_everything_else(*children)
            header = {"status": "nonzero_exit", "exit_code": 127, "error": f"{type(err).__name__}: {err}"}
            return header, b"", str(err).encode()
        finally:
            for fd in channel:
                os.close(fd)
        out, err, why = self._collect(proc, stdin, start + timeout, cap, bool(req.get("until_exit")))
        if why is None:
            try:
                proc.wait(timeout=max(0.0, start + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                why = "timeout"
        kill_everything_else(proc, *children)
        code = proc.wait()
        duration = time.monotonic() - start
        ooms_after = oom_kills()
        if ooms_before is not None and ooms_after is not None and ooms_after > ooms_before:
            status = "oom"
        elif why is not None:
            status = why
        else:
            status = "ok" if code == 0 else "nonzero_exit"
        header = {"status": status, "exit_code": code, "duration_s": duration,
                  "truncated": why == "output_truncated"}
        return header, out, err

    def _collect(self, proc: subprocess.Popen, stdin: bytes, deadline: float, cap: int, until_exit: bool = False):
        """Feed stdin, read both streams until EOF, the deadline, or more than `cap` bytes in all. With
        `until_exit`, stop once the command itself has exited and what was written by then is read: a process it
        left behind holding the pipes can neither delay the answer nor add to it."""
        sel = selectors.DefaultSelector()
        bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
        for stream in bufs:
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        pending = memoryview(stdin)
        if pending:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        why = None
        try:
            while sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    why = "timeout"
                    break
                if until_exit and proc.poll() is not None:
                    _drain(bufs, {key.fileobj for key in sel.get_map().values()}, cap)
                    if sum(len(b) for b in bufs.values()) > cap:
                        why = "output_truncated"
                    break
                for key, _ in sel.select(min(remaining, 0.05) if until_exit else remaining):
                    if key.fileobj is proc.stdin:
                        try:
                            pending = pending[os.write(proc.stdin.fileno(), pending[:READ_CHUNK]):]
                        except BrokenPipeError:
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(proc.stdin)
                            proc.stdin.close()
                        continue
                    chunk = os.read(key.fileobj.fileno(), READ_CHUNK)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    bufs[key.fileobj] += chunk
                if sum(len(b) for b in bufs.values()) > cap:
                    why = "output_truncated"
                    break
        finally:
            sel.close()
        if why is not None:
            kill_everything_else(proc)
        out, err = bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr])
        if why == "output_truncated":
            out = out[:cap]
            err = err[: max(0, cap - len(out))]
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if not stream.closed:
                stream.close()
        return out, err, why


def _drain(bufs: dict, streams: set, cap: int) -> None:
    """Read what is in the pipes now, without waiting for more (up to just past `cap` bytes in all)."""
    for stream in bufs:
        if stream in streams:
            with contextlib.suppress(OSError):  # BlockingIOError: nothing more there now
                while sum(len(b) for b in bufs.values()) <= cap and (chunk := os.read(stream.fileno(), READ_CHUNK)):
                    bufs[stream] += chunk


def _entries(path: str) -> int:
    """How many objects a /proc/sysvipc table lists (its first line is a header)."""
    try:
        with open(path) as f:
            return max(0, len(f.read().splitlines()) - 1)
    except OSError:
        return 0


def read_exact(conn: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("client closed the connection mid-request")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def serve(conn: socket.socket, executor: Executor, started: float) -> None:
    with conn, conn.makefile("rb") as reader:
        try:
            req = json.loads(reader.readline())
            if req.get("op") == "ping":
                header, out, err = {"status": "ok", "uptime_s": time.monotonic() - started}, b"", b""
            elif req.get("op") == "reset":
                header, out, err = executor.reset(), b"", b""
            else:
                stdin = reader.read(int(req.get("stdin_len", 0)))
                header, out, err = executor.run(req, stdin)
        except Exception as exc:
            header, out, err = {"status": "infra_error", "error": f"{type(exc).__name__}: {exc}"}, b"", b""
        header.update(stdout_len=len(out), stderr_len=len(err))
        conn.sendall(json.dumps(header).encode() + b"\n" + out + err)


SANDBOX_INITS = ("tini", "docker-init", "bwrap")


def inside_a_sandbox() -> bool:
    """True when this process runs under a sandbox's own init, i.e. in a pid namespace of its own.

    The executor kills every other process it can see after each exec; on a host that would be
    everything. So it refuses to run unless its parent is PID 1 and PID 1 is a known sandbox init.
    """
    try:
        with open("/proc/1/cmdline", "rb") as f:
            init = os.path.basename(f.read().split(b"\0")[0].decode())
    except OSError:
        return False
    return os.getppid() == 1 and init in SANDBOX_INITS


def main() -> None:
    if not inside_a_sandbox():
        raise SystemExit("executor: refusing to start outside a sandbox (PID 1 must be tini or bwrap and my parent)")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on.")
    parser.add_argument("--uid", type=int, default=1000, help="uid commands run as.")
    parser.add_argument("--gid", type=int, default=1000, help="gid commands run as.")
    parser.add_argument("--grader-uid", type=int, default=None,
                        help="uid (and gid) of the trusted side of a paired exec; none: paired execs are refused.")
    parser.add_argument("--lifetime", type=float, default=3600, help="Seconds before the sandbox ends itself.")
    parser.add_argument("--wrap", default="", help="Space-separated prefix for every command (e.g. prlimit ...).")
    args = parser.parse_args()

    started = time.monotonic()
    executor = Executor(args.uid, args.gid, args.wrap.split(), args.grader_uid)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(args.socket)
    os.chmod(args.socket, 0o666)
    server.listen(64)

    def end_of_life() -> None:
        kill_everything_else()
        os._exit(0)

    timer = threading.Timer(args.lifetime, end_of_life)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, lambda *_: end_of_life())
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, executor, started), daemon=True).start()


if __name__ == "__main__":
    main()
