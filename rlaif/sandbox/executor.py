"""The sandbox executor: a tiny server that runs inside a sandbox and forks commands on request.

It is started as the sandbox's main process (under an init that reaps orphans) and listens on a Unix
socket in a folder shared with the host. One connection carries one request. Standard library only:
it runs on whatever python3 the sandbox image has, and on the host under bubblewrap.

Why it exists: `docker exec` through the API costs ~5x a plain process start; forking here costs
about the same as a local `subprocess.run`. Every command is forked by the executor's zygote (`Zygote`: a clean
copy of this interpreter made before any request), and a `python3 -I -S -c SOURCE` command is run by the forked
copy itself, without a new interpreter's start-up: a grading harness then costs a fork, not a process start.

Privilege model: the executor runs as root with only CAP_KILL, CAP_SETUID and CAP_SETGID (the sandbox
drops every other capability); its zygote keeps them too, with another real uid. Each command runs as an
unprivileged uid with no capabilities, so a command can signal neither of them, while the executor can kill every
process a command left behind, including ones that escaped their process group with setsid. Execs are serialised:
after each one, every process of the commands' uids is killed (`kill_commands`: kill(-1) as those uids), which
needs no fork and so works even when a fork bomb has exhausted the pid limit.

A paired exec (`"peer"` in the request) runs two processes joined by a pipe in each direction: the
request's own command as the *grader* uid (`--grader-uid`, trusted: it gets the stdin and its stdout is
the answer) and the peer as the commands' uid (untrusted: no stdin but the pipe, its output discarded).
The trusted side finds the pipe ends in `RLAIF_CHANNEL` ("READ_FD,WRITE_FD"). Neither uid can signal,
trace or read the other's memory, files or /proc entries; the peer cannot reach the answer at all.

`reset` makes a used sandbox as good as fresh, or says it cannot: every process but init, the
executor and its zygote is killed, /work, /tmp and /dev/shm are emptied (as the commands' uid, which owns what they
left), and the answer is `clean: false` when anything survives that (a file, a process, a SysV IPC
object), so the caller retires the sandbox instead of reusing it.

Wire format (both directions): one JSON header line, then raw bytes whose lengths the header gives.
  request  {"op": "exec", "argv": [...], "timeout": s, "env": {...}, "cwd": "/work", "stdin_len": n,
            "max_output": bytes, "until_exit": bool?, "preload": bool?,
            "peer": {"argv": [...], "env": {...}, "cwd": ...}?}
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
import fcntl
import json
import os
import resource
import select
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
import types

OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
READ_CHUNK = 1 << 16
LEN = struct.Struct(">I")
PR_SET_DUMPABLE = 4
MAX_PRELOAD = 1 << 17
"""Longest source the zygote keeps compiled (`preload`)."""
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


def others(spared: set[int]) -> list[int]:
    """Every process this pid namespace shows but the spared ones (zombies included, until reaped)."""
    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and int(pid) not in spared]


def kill_commands(uids: tuple[int, ...], spared: set[int], grace_s: float = 0.5) -> list[int]:
    """SIGKILL every process of these uids until no process but the spared ones is left (or `grace_s` passed).
    Returns the pids still there.

    kill(-1) from a process whose real uid is 0 and effective uid is U, without capabilities in effect (a change of
    the effective uid clears them until it is changed back), reaches exactly the processes whose real or saved uid is
    0 or U: the commands of uid U and none else, since the only other processes are the init (never signalled), this
    one (never signalled by its own kill(-1)) and the zygote (real and saved uid `--zygote-uid`). One system call
    reaches them all, so a fork bomb cannot outrun it, and none of them can signal this process meanwhile (its real
    and saved uid stay 0). Zombies are reaped by their parent (the zygote, or the init for orphans)."""
    deadline = time.monotonic() + grace_s
    while True:
        for uid in uids:
            os.seteuid(uid)
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:  # ESRCH: nothing of its own to signal
                pass
            finally:
                os.seteuid(0)
        left = others(spared)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.001)


class Zygote:
    """A clean interpreter forked from the executor before it reads any request; it forks every command.

    It never reads a request: asked to fork, it forks, and the child reads its own command (argv, env, cwd, its pipe
    ends) from a socket the executor made for it alone. Request payloads (a grading's tests included) travel in
    pipes from the executor to the command. So a command, which starts as a copy of the zygote, finds nothing of any
    other command in its memory. A command of the form `python3 -I -S -c SOURCE ARGS...` whose `python3` is this
    interpreter is not started afresh: the forked copy compiles and runs SOURCE itself, as that command would (same
    interpreter, same flags, a fresh `__main__`), which saves the interpreter's start-up, most of a small program's
    cost. Anything else is exec'd. What such a program can tell apart: its /proc/self/cmdline is the zygote's, and
    the modules the executor imported (all of the standard library) are already in `sys.modules`.

    It runs with real and saved uid `uid` and effective uid 0 (so it keeps CAP_SETUID and CAP_SETGID to become a
    command's uid), which puts it out of reach of the commands' signals and of `kill_commands`. It tells the
    executor each child's pid as it forks it and each exit as it reaps it."""

    def __init__(self, uid: int, rlimits: dict[int, int]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                os.setresuid(uid, 0, uid)
                _serve_forks(theirs, rlimits)
            finally:
                os._exit(0)
        theirs.close()
        self.pid, self.sock, self.exits, self.preloaded = pid, ours, {}, set()

    def spawn(self, argv: list[str], env: dict, cwd: str | None, uid: int, gid: int, fds: dict[int, int],
              preload: bool = False) -> int:
        """Start a command; `fds` maps the command's fd numbers to ours (given to it, not closed here). With
        `preload`, an inline program's source is no secret and the zygote keeps it compiled for the commands after
        this one. Raises OSError (errno, why) when it could not start: no such program, a bad cwd."""
        source = _inline_source(argv, env)
        if preload and source is not None and source not in self.preloaded and len(source) < MAX_PRELOAD:
            self.sock.send(b"c" + source.encode())
            self.preloaded.add(source)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with mine:
            with theirs:
                socket.send_fds(self.sock, [b"f"], [theirs.fileno()])
            header = json.dumps({"argv": argv, "env": env, "cwd": cwd, "uid": uid, "gid": gid,
                                 "targets": list(fds)}).encode()
            socket.send_fds(mine, [b"r"], list(fds.values()))
            mine.sendall(LEN.pack(len(header)) + header)
            failure = b"".join(iter(lambda: mine.recv(1 << 16), b""))  # EOF: it exec'd, or runs the source
        while "pid" not in (message := self._receive(None)):
            pass
        if failure:
            why = json.loads(failure)
            raise OSError(why["errno"], why["error"])
        return message["pid"]

    def exit_code(self, pid: int, timeout: float | None = 0.0) -> int | None:
        """The command's exit code (negative: the signal that ended it) once the zygote has reaped it; None if it has
        not within `timeout` seconds (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while pid not in self.exits:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._receive(left) and left is not None:
                break  # nothing more came in time
        return self.exits.get(pid)

    def forget(self) -> None:
        """Drop the exits seen so far (read what is pending first): the next command starts a clean slate."""
        while self._receive(0.0):
            pass
        self.exits.clear()

    def _receive(self, timeout: float | None) -> dict:
        """One message from the zygote (an exit is recorded as it passes), or {} when none came within `timeout`."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return {}
        data = self.sock.recv(1 << 16)
        if not data:
            raise OSError("the zygote is gone")
        message = json.loads(data)
        if "exit" in message:
            self.exits[message["exit"]] = message["code"]
        return message


def _serve_forks(sock: socket.socket, rlimits: dict[int, int]) -> None:
    """The zygote's loop: fork a child per request, report each exit as it is reaped."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    compiled: dict[str, types.CodeType] = {}
    import ctypes  # here, not in each child: an inline program restores its dumpable flag through it

    libc = ctypes.CDLL(None, use_errno=True)
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                sock.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())
        if sock in ready:
            data, fds, _, _ = socket.recv_fds(sock, MAX_PRELOAD + 1, 1)
            if data[:1] == b"c":
                if len(compiled) >= 32:
                    compiled.clear()
                with contextlib.suppress(SyntaxError, ValueError):  # its command will say why, as python3 would
                    compiled[data[1:].decode()] = compile(data[1:], "<string>", "exec")
                continue
            if data != b"f" or len(fds) != 1:
                return  # the executor is gone
            pid = os.fork()
            if pid == 0:
                try:
                    signal.set_wakeup_fd(-1)
                    for fd in (sock.fileno(), wake_r, wake_w):
                        os.close(fd)
                    _child(fds[0], rlimits, compiled, libc)
                finally:
                    os._exit(120)  # never back into this loop
            os.close(fds[0])
            sock.send(json.dumps({"pid": pid}).encode())


def _child(channel: int, rlimits: dict[int, int], compiled: dict[str, types.CodeType], libc) -> None:
    """A forked child: read its command from `channel`, become it (exec it, or run its source here). A failure to
    set it up (no such program, a bad cwd) goes back on the channel, which is close-on-exec: EOF means it started."""
    conn = socket.socket(fileno=channel)
    _, fds, _, _ = socket.recv_fds(conn, 1, 16)
    (size,) = LEN.unpack(read_exact(conn, 4))
    req = json.loads(read_exact(conn, size))
    conn.detach()  # the fd is closed with the others that the command must not have
    source = _inline_source(req["argv"], req["env"])
    try:
        code = None if source is None else compiled.get(source) or compile(source, "<string>", "exec")
    except (SyntaxError, ValueError):
        code = None  # the interpreter, exec'd, says why as it would
    errors = fcntl.fcntl(channel, fcntl.F_DUPFD_CLOEXEC, 256)  # clear of the command's fd numbers
    try:
        _become(req, fds, rlimits, errors, inline=code is not None)
        if code is None:
            os.execvpe(req["argv"][0], req["argv"], req["env"])
        if libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:  # cleared by the uid change; an exec'd program has it
            raise OSError(ctypes_errno(), "cannot set the dumpable flag")
        os.close(errors)
    except BaseException as err:
        number = err.errno if isinstance(err, OSError) else 0
        os.write(errors, json.dumps({"errno": number, "error": f"{type(err).__name__}: {err}"}).encode())
        os._exit(127)
    _run_inline(code, req["argv"], req["env"])


def ctypes_errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _inline_source(argv: list[str], env: dict) -> str | None:
    """SOURCE when `argv` is `python3 -I -S -c SOURCE ...` and that python3 (looked up on the command's PATH) is this
    interpreter; else None."""
    if len(argv) < 5 or argv[1:4] != ["-I", "-S", "-c"] or argv[0] != "python3":
        return None
    for folder in env.get("PATH", "").split(":"):
        candidate = os.path.join(folder or ".", argv[0])
        if os.access(candidate, os.X_OK):
            with contextlib.suppress(OSError):
                if os.path.samefile(candidate, sys.executable):
                    return argv[4]
            return None
    return None


def _become(req: dict, fds: list[int], rlimits: dict[int, int], errors: int, inline: bool) -> None:
    """In the forked child: its own session, its fds at their numbers (no others but `errors`, close-on-exec), the
    command's uid and limits."""
    os.setsid()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 256) for fd in fds]
    for target, fd in zip(req["targets"], high, strict=True):
        os.dup2(fd, target)
    keep = {*req["targets"], errors}
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    signal.set_wakeup_fd(-1)
    for number in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    os.setgroups([])
    os.setresgid(req["gid"], req["gid"], req["gid"])
    os.setresuid(req["uid"], req["uid"], req["uid"])  # every uid non-zero: no capability left
    for limit, value in rlimits.items():
        resource.setrlimit(limit, (value, value))
    if req["cwd"]:
        os.chdir(req["cwd"])
    if not inline:
        for number in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess restores them for an exec'd program
            signal.signal(number, signal.SIG_DFL)


def _run_inline(code: types.CodeType, argv: list[str], env: dict[str, str]) -> None:
    """Run a `python3 -I -S -c` program in this forked interpreter as that command would, and exit as it would."""
    import atexit

    os.environ.clear()
    os.environ.update(env)
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=sys.modules["builtins"], __annotations__={},
                         __loader__=sys.modules["_frozen_importlib"].BuiltinImporter)
    sys.modules["__main__"] = main
    sys.argv = ["-c", *argv[5:]]
    status = 0
    try:
        exec(code, main.__dict__)
    except SystemExit as stop:
        status = _exit_status(stop)
    except BaseException:
        traceback.print_exc()
        status = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        status = status or 120
    os._exit(status)


def _exit_status(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code & 0xFF
    print(stop.code, file=sys.stderr)
    return 1


PIPE, DEVNULL = -1, -2


class Process:
    """A command the zygote started: our ends of its pipes, and its exit code once the zygote has reaped it."""

    def __init__(self, zygote: Zygote, pid: int, streams: dict[int, object]) -> None:
        self.zygote, self.pid, self.returncode = zygote, pid, None
        self.stdin, self.stdout, self.stderr = (streams.get(n) for n in (0, 1, 2))

    def poll(self) -> int | None:
        return self.wait(0.0)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, waiting up to `timeout` seconds for it (None: as long as it takes); None if not yet."""
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.pid, timeout)
        return self.returncode


class Executor:
    def __init__(self, uid: int, gid: int, zygote: Zygote, grader_uid: int | None = None) -> None:
        self.uid, self.gid, self.zygote, self.grader_uid = uid, gid, zygote, grader_uid
        self.uids = (uid,) if grader_uid is None else (uid, grader_uid)
        self.spared = {1, os.getpid(), zygote.pid}
        self.lock = threading.Lock()  # one exec at a time: cleanup after an exec kills everything

    def run(self, req: dict, stdin: bytes) -> tuple[dict, bytes, bytes]:
        with self.lock:
            return self._run(req, stdin)

    def _kill(self) -> None:
        kill_commands(self.uids, self.spared)

    def reset(self) -> dict:
        """Kill every command's process and empty the scratch folders; `clean` says whether nothing survived."""
        with self.lock:
            self._kill()
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
            self._kill()
            left = [d for d in SCRATCH if os.path.isdir(d) and os.listdir(d)]
            left += [path for path in SYSV_IPC if _entries(path)]
            left += [f"process {pid}" for pid in others(self.spared)]
            return {"status": "ok", "clean": not left, "left": left[:10]}

    def _start(self, req: dict, uid: int, stdin: int = PIPE, stdout: int = PIPE, stderr: int = PIPE,
               pass_fds: tuple[int, ...] = (), preload: bool = False) -> Process:
        """Have the zygote start `req`'s command as `uid`: each stream a new pipe (PIPE), /dev/null, or an fd of ours
        given at the same number; `pass_fds` given at their own numbers."""
        given, ours, temporary = {fd: fd for fd in pass_fds}, {}, []
        try:
            for target, spec in enumerate((stdin, stdout, stderr)):
                if spec == PIPE:
                    read, write = os.pipe()
                    child, mine = (read, write) if target == 0 else (write, read)
                    temporary.append(child)
                    ours[target] = open(mine, "wb" if target == 0 else "rb", buffering=0)  # noqa: SIM115 (_collect closes it)
                    given[target] = child
                elif spec == DEVNULL:
                    given[target] = os.open(os.devnull, os.O_RDWR)
                    temporary.append(given[target])
                else:
                    given[target] = spec
            gid = uid if uid != self.uid else self.gid
            pid = self.zygote.spawn(req["argv"], req.get("env") or {}, req.get("cwd") or None, uid, gid, given,
                                    preload)
        except BaseException:
            for stream in ours.values():
                stream.close()
            raise
        finally:
            for fd in temporary:
                os.close(fd)
        return Process(self.zygote, pid, ours)

    def _run(self, req: dict, stdin: bytes) -> tuple[dict, bytes, bytes]:
        timeout, cap = float(req.get("timeout", 30)), int(req.get("max_output", 1 << 20))
        peer = req.get("peer")
        if peer is not None and self.grader_uid is None:
            return {"status": "infra_error", "error": "this executor was started without --grader-uid"}, b"", b""
        self.zygote.forget()
        ooms_before = oom_kills()
        start = time.monotonic()
        channel: list[int] = []
        preload = bool(req.get("preload"))
        try:
            if peer is None:
                proc = self._start(req, self.uid, preload=preload)
            else:
                to_peer, from_peer = os.pipe(), os.pipe()
                channel = [*to_peer, *from_peer]
                self._start(peer, self.uid, stdin=to_peer[0], stdout=from_peer[1], stderr=DEVNULL, preload=preload)
                req = {**req, "env": {**(req.get("env") or {}), "RLAIF_CHANNEL": f"{from_peer[0]},{to_peer[1]}"}}
                proc = self._start(req, self.grader_uid, pass_fds=(from_peer[0], to_peer[1]), preload=preload)
        except OSError as err:
            if err.errno is None:
                raise  # the zygote is gone: the sandbox's failure, not the command's
            # The command could not start (no such program, bad cwd): that is the caller's command.
            self._kill()
            header = {"status": "nonzero_exit", "exit_code": 127, "error": err.strerror or str(err)}
            return header, b"", (err.strerror or str(err)).encode()
        finally:
            for fd in channel:
                os.close(fd)
        out, err, why = self._collect(proc, stdin, start + timeout, cap, bool(req.get("until_exit")))
        if why is None and proc.wait(max(0.0, start + timeout - time.monotonic())) is None:
            why = "timeout"
        self._kill()
        code = proc.wait(5.0)
        if code is None:
            raise OSError(f"the zygote did not report how process {proc.pid} ended")
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

    def _collect(self, proc: Process, stdin: bytes, deadline: float, cap: int, until_exit: bool = False):
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
            self._kill()
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
    parser.add_argument("--zygote-uid", type=int, default=None,
                        help="Real uid of the zygote, used by nothing else (default: the commands' uid + 2).")
    parser.add_argument("--rlimit", action="append", default=[], metavar="NAME=VALUE",
                        help="A limit every command runs under (soft and hard), by prlimit's name: as, nproc, fsize...")
    args = parser.parse_args()
    rlimits = {getattr(resource, f"RLIMIT_{name.upper()}"): int(value)
               for name, _, value in (item.partition("=") for item in args.rlimit)}

    started = time.monotonic()
    zygote = Zygote(args.uid + 2 if args.zygote_uid is None else args.zygote_uid, rlimits)  # before any request
    executor = Executor(args.uid, args.gid, zygote, args.grader_uid)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(args.socket)
    os.chmod(args.socket, 0o666)
    server.listen(64)

    def end_of_life() -> None:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)  # as root: the zygote too
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
