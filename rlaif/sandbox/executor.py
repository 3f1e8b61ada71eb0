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

Wire format (both directions): one JSON header line, then raw bytes whose lengths the header gives.
  request  {"op": "exec", "argv": [...], "timeout": s, "env": {...}, "cwd": "/work", "stdin_len": n,
            "max_output": bytes} + stdin bytes        |  {"op": "ping"}
  response {"status", "exit_code", "duration_s", "truncated", "stdout_len", "stderr_len", "error"}
            + stdout bytes + stderr bytes
Statuses: ok, nonzero_exit, timeout, oom, output_truncated (the command was stopped when its
output passed max_output), infra_error (the executor could not run it).

What it does not protect against: anything the kernel lets an unprivileged uid do inside the
namespaces and limits the sandbox was started with. The sandbox provides those; this only runs commands.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import subprocess
import threading
import time

OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
READ_CHUNK = 1 << 16


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


def kill_everything_else(child: subprocess.Popen | None = None, grace_s: float = 0.5) -> int:
    """SIGKILL every process but init and this one, until none is left. Returns the rounds it took.

    kill(-1) also "succeeds" on zombies, so each round reaps our own child; the init reaps the rest.
    """
    deadline = time.monotonic() + grace_s
    rounds = 0
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return rounds
        rounds += 1
        if child is not None:
            child.poll()
        time.sleep(0.001)
    return rounds


class Executor:
    def __init__(self, uid: int, gid: int, wrap: list[str]) -> None:
        self.uid, self.gid, self.wrap = uid, gid, wrap
        self.lock = threading.Lock()  # one exec at a time: cleanup after an exec kills everything

    def run(self, req: dict, stdin: bytes) -> tuple[dict, bytes, bytes]:
        with self.lock:
            return self._run(req, stdin)

    def _run(self, req: dict, stdin: bytes) -> tuple[dict, bytes, bytes]:
        timeout, cap = float(req.get("timeout", 30)), int(req.get("max_output", 1 << 20))
        ooms_before = oom_kills()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                [*self.wrap, *req["argv"]], cwd=req.get("cwd") or None, env=req.get("env") or {},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                user=self.uid, group=self.gid, extra_groups=[], start_new_session=True,
            )
        except OSError as err:
            # The command could not start (no such program, bad cwd): that is the caller's command.
            header = {"status": "nonzero_exit", "exit_code": 127, "error": f"{type(err).__name__}: {err}"}
            return header, b"", str(err).encode()
        out, err, why = self._collect(proc, stdin, start + timeout, cap)
        if why is None:
            try:
                proc.wait(timeout=max(0.0, start + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                why = "timeout"
        kill_everything_else(proc)
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

    def _collect(self, proc: subprocess.Popen, stdin: bytes, deadline: float, cap: int):
        """Feed stdin, read both streams until EOF, the deadline, or more than `cap` bytes in all."""
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
                for key, _ in sel.select(remaining):
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
    parser.add_argument("--lifetime", type=float, default=3600, help="Seconds before the sandbox ends itself.")
    parser.add_argument("--wrap", default="", help="Space-separated prefix for every command (e.g. prlimit ...).")
    args = parser.parse_args()

    started = time.monotonic()
    executor = Executor(args.uid, args.gid, args.wrap.split())
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
