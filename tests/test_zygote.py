"""The executor's zygote on both backends: a `python3 -I -S -c` command that it runs in a forked interpreter behaves
as the exec'd command would, and finds nothing of the commands before it in its own memory."""

from __future__ import annotations

import asyncio
import json

import pytest

from rlaif.sandbox.base import Limits
from rlaif.sandbox.pool import start_sandbox

pytestmark = pytest.mark.docker
INLINE = ["python3", "-I", "-S", "-c"]
EXECD = ["/usr/bin/env", *INLINE]
"""The same command, exec'd: the zygote runs only `python3 ...` itself."""
PROBE = """
import json, os, resource, signal, sys
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({
    "argv": sys.argv, "path": sys.path, "flags": [sys.flags.isolated, sys.flags.no_site, sys.flags.safe_path],
    "executable": sys.executable, "env": dict(os.environ), "ids": [os.getuid(), os.getgid(), os.getgroups()],
    "caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")], "cwd": os.getcwd(),
    "sid": os.getsid(0) == os.getpid(), "name": __name__,
    "globals": {k: repr(v) for k, v in globals().items() if k not in ("json", "os", "resource", "signal", "sys",
                                                                       "status")},
    "limits": [resource.getrlimit(getattr(resource, n)) for n in ("RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE")],
    "signals": [str(signal.getsignal(s)) for s in (signal.SIGPIPE, signal.SIGINT, signal.SIGCHLD, signal.SIGTERM)],
    "fds": sorted(os.listdir("/proc/self/fd")), "dumpable": os.stat("/proc/self/mem").st_uid == os.getuid(),
    "inline": open("/proc/self/cmdline", "rb").read().split(b"\\0")[3] != b"-c",
}))
"""
SCAN = """
import re, sys
pattern = re.compile(rb"ZQX[0-9]{8}")  # spelt so that this program holds no marker itself
found = set()
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb") as mem:
    for line in maps:
        span, perms = line.split()[:2]
        low, high = (int(x, 16) for x in span.split("-"))
        if perms.startswith("r") and "[vvar" not in line:
            try:
                mem.seek(low)
                found.update(m.decode() for m in pattern.findall(mem.read(high - low)))
            except (OSError, OverflowError, ValueError):
                pass
print(" ".join(sorted(found)))
"""


@pytest.fixture(params=["local", "docker"])
def sandbox(request, docker_engine, base_image):
    loop = asyncio.new_event_loop()
    box = loop.run_until_complete(start_sandbox(request.param, base_image, Limits(timeout_s=20, memory_mb=512)))
    yield lambda *args, **kwargs: loop.run_until_complete(box.exec(*args, **kwargs))
    loop.run_until_complete(box.close())
    loop.close()


def test_an_inline_command_behaves_as_the_execd_one(sandbox):
    inline, execd = (json.loads(sandbox([*prefix, PROBE, "an", "argument"], env={"EXTRA": "1"}).stdout)
                     for prefix in (INLINE, EXECD))
    assert inline.pop("inline") and not execd.pop("inline"), "the zygote ran the first one itself, and only that one"
    assert inline == execd
    assert inline["argv"] == ["-c", "an", "argument"] and inline["env"]["EXTRA"] == "1" and inline["dumpable"]


@pytest.mark.parametrize("program, code, stderr", [
    ("raise SystemExit(3)", 3, ""),
    ("import sys; sys.exit('no good')", 1, "no good\n"),
    ("1 / 0", 1, "ZeroDivisionError: division by zero\n"),
    ("import os; os.kill(os.getpid(), 9)", -9, ""),
    ("import atexit; atexit.register(print, 'at exit'); print('body', end=' ')", 0, ""),
    ("def broken(:", 1, "SyntaxError: invalid syntax\n"),
])
def test_an_inline_command_ends_as_the_execd_one(sandbox, program, code, stderr):
    inline, execd = (sandbox([*prefix, program]) for prefix in (INLINE, EXECD))
    assert (inline.exit_code, inline.stdout) == (execd.exit_code, execd.stdout)
    assert inline.exit_code == code and inline.stderr.endswith(stderr) and execd.stderr.endswith(stderr)


def test_a_command_finds_nothing_of_the_commands_before_it_in_its_memory(sandbox):
    """Markers travel in an earlier command's argv, environment and stdin, and in an earlier inline program;
    the scan finds only the one in its own argv (so it would see a leak)."""
    assert sandbox(["sh", "-c", "echo ZQX11111111 >/dev/null"], env={"M": "ZQX22222222"}).ok
    assert sandbox(["cat"], stdin=b"ZQX33333333" * 1000).ok
    assert sandbox([*INLINE, "x = 'ZQX' + '44444444'; y = x * 3"], stdin=b"ZQX55555555").ok
    scanned = sandbox([*INLINE, SCAN, "ZQX99999999"])
    assert scanned.ok, scanned.stderr
    assert scanned.stdout.split() == ["ZQX99999999"]
