"""Local (bubblewrap) sandboxes: the interface, the isolation it promises, hostile programs and cleanup.

Needs root and bubblewrap, and fails without them. Each test starts its own sandbox inside its own
`asyncio.run` (an asyncio subprocess belongs to the loop that started it). No test sends traffic
anywhere: the network check only lists the sandbox's interfaces.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from rlaif.sandbox import local_backend
from rlaif.sandbox.base import Limits, SandboxError
from rlaif.sandbox.local_backend import SOCKET_ROOT, LocalSandbox
from rlaif.sandbox.pool import start_sandbox

pytestmark = []
LIMITS = Limits(memory_mb=256, pids=64, timeout_s=10, max_output_bytes=1 << 20, work_mb=32, tmp_mb=16)
NOBODY = 65534


def _processes() -> dict[int, int]:
    """Every host process: pid -> parent pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            found[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return found


def _tree(root: int) -> set[int]:
    """`root` and every host process below it."""
    processes, tree = _processes(), {root}
    grew = True
    while grew:
        below = {pid for pid, ppid in processes.items() if ppid in tree} - tree
        tree |= below
        grew = bool(below)
    return tree & (set(processes) | {root})


def _wait_until(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_exec_is_exact_and_fast():
    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            results, latencies, host = [], [], []
            for _ in range(20):  # interleaved with the same command on the host, which shares any load
                start = time.monotonic()
                results.append(await sandbox.exec('python3 -c "print(1)"'))
                latencies.append(time.monotonic() - start)
                start = time.monotonic()
                subprocess.run(["/usr/bin/python3", "-c", "print(1)"], capture_output=True, check=True)
                host.append(time.monotonic() - start)
            shell = await sandbox.exec("echo $HOME; pwd; exit 3")
            missing = await sandbox.exec(["no-such-program"])
            return results, latencies, host, shell, missing

    results, latencies, host, shell, missing = asyncio.run(go())
    for result in results:
        assert (result.status, result.exit_code, result.stdout, result.stderr) == ("ok", 0, "1\n", "")
    p50, host_p50 = statistics.median(latencies), statistics.median(host)
    print(f"local sandbox exec p50 {p50 * 1000:.1f} ms (same command on the host {host_p50 * 1000:.1f} ms)")
    # 50 ms on a quiet machine (~15 ms measured); on a loaded one, each scheduling hop waits: 3x the host.
    assert p50 < max(0.050, 3 * host_p50)
    assert (shell.status, shell.exit_code, shell.stdout) == ("nonzero_exit", 3, "/work\n/work\n")
    assert missing.status == "nonzero_exit" and missing.exit_code == 127


def test_commands_run_unprivileged_with_no_capabilities():
    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            result = await sandbox.exec("id -u; id -g; grep -E '^(Cap(Inh|Prm|Eff|Amb)|NoNewPrivs):' /proc/self/status")
            executor_caps = []
            for pid in _tree(sandbox.process.pid):  # from the host: the executor is out of the command's reach
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if b"/opt/rlaif/executor.py" in argv and not argv[0].endswith(b"bwrap"):
                        executor_caps.append(next(line.split()[1] for line in status.splitlines()
                                                  if line.startswith("CapEff:")))
                except OSError:
                    continue
            return result, executor_caps

    result, executor_caps = asyncio.run(go())
    # The executor and its zygote (which forks every command) keep exactly CAP_KILL, CAP_SETGID, CAP_SETUID.
    assert executor_caps == ["00000000000000e0"] * 2
    assert result.ok, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [str(NOBODY), str(NOBODY)]
    status = dict(line.split(":\t") for line in lines[2:])
    assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == "0000000000000000", status
    assert status["NoNewPrivs"] == "1"


def test_only_loopback_exists():
    probe = ("import json, os, socket\n"
             "dev = [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]]\n"
             "sys_net = sorted(os.listdir('/sys/class/net')) if os.path.isdir('/sys/class/net') else ['lo']\n"
             "print(json.dumps([dev, [n for _, n in socket.if_nameindex()], sys_net]))")

    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            return await sandbox.exec(["python3", "-c", probe])

    result = asyncio.run(go())
    assert result.ok, result.stderr
    assert json.loads(result.stdout) == [["lo"], ["lo"], ["lo"]]


def test_only_work_and_tmp_are_writable_and_files_round_trip():
    probe = ("for p in /etc/x /usr/x /x /opt/x /run/x /run/rlaif/x /opt/rlaif/executor.py /dev/x "
             "/proc/sys/kernel/hostname; do (echo > $p) 2>/dev/null && echo WROTE $p; done; "
             "python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('/run/rlaif/executor.sock')\" "
             "2>/dev/null && echo REACHED executor; touch /work/ok /tmp/ok /dev/shm/ok && rm /work/ok && echo writable")

    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            planted = await sandbox.exec("touch /etc/planted-by-rlaif-test")
            probed = await sandbox.exec(probe)
            await sandbox.write_files({"pkg/mod.py": "def f():\n    return 1\n", "data.bin": bytes(range(256))})
            edit = await sandbox.exec("sed -i 's/return 1/return 2/' pkg/mod.py && echo new > added.txt")
            tree = await sandbox.read_tree()
            one = await sandbox.read_file("/work/pkg/mod.py")
            with pytest.raises(SandboxError, match="no/such"):
                await sandbox.read_file("/work/no/such")
            return planted, probed, edit, tree, one

    planted, probed, edit, tree, one = asyncio.run(go())
    assert planted.status == "nonzero_exit" and "Read-only file system" in planted.stderr
    assert not Path("/etc/planted-by-rlaif-test").exists()
    assert probed.stdout == "writable\n", "nothing outside /work, /tmp and /dev/shm is writable"
    assert edit.ok, edit.stderr
    assert tree == {"pkg/mod.py": b"def f():\n    return 2\n", "data.bin": bytes(range(256)), "added.txt": b"new\n"}
    assert one == b"def f():\n    return 2\n"


def test_timeout_is_kept_and_the_sandbox_still_works():
    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            start = time.monotonic()
            slow = await sandbox.exec("sleep 30", timeout=1)
            elapsed = time.monotonic() - start
            after = await sandbox.exec(["echo", "next"])
            return slow, elapsed, after

    slow, elapsed, after = asyncio.run(go())
    assert slow.status == "timeout"
    assert elapsed < 2.0, f"returned after {elapsed:.2f} s"
    assert after.ok and after.stdout == "next\n"


def test_detached_children_do_not_outlive_their_exec():
    survivors = ("import os\n"
                 "for p in os.listdir('/proc'):\n"
                 "    try: argv0 = open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')[0]\n"
                 "    except OSError: continue\n"
                 "    if argv0.endswith(b'sleep'): print(p)")

    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            detached = await sandbox.exec(["sh", "-c", "setsid sleep 100 >/dev/null 2>&1 & sleep 0.2; echo $!"],
                                          timeout=5)
            running = await sandbox.exec(["sh", "-c", "setsid sleep 100 >/dev/null 2>&1 & sleep 0.2; "
                                          f"python3 -c \"{survivors}\""], timeout=5)
            left = await sandbox.exec(["python3", "-c", survivors])
            return detached, running, left

    detached, running, left = asyncio.run(go())
    assert detached.ok and detached.stdout.strip().isdigit()
    assert running.ok and running.stdout.strip(), "the probe must see a sleep while it runs"
    assert left.ok and left.stdout == "", f"sleep survived its exec: pids {left.stdout.split()}"


def test_fork_bomb_times_out_and_the_host_recovers():
    bomb = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    before = len(_processes())

    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            start = time.monotonic()
            result = await sandbox.exec(["python3", "-c", bomb], timeout=3)
            elapsed = time.monotonic() - start
            # Orphans are re-parented to the sandbox's PID 1, so every process it has is in this tree: beside bwrap,
            # its reaper, the executor and its zygote.
            cleaned = _wait_until(lambda: len(_tree(sandbox.process.pid)) == 4)
            left = len(_tree(sandbox.process.pid)) - 4
            after = await sandbox.exec(["echo", "next"])
            return result, elapsed, cleaned, left, after

    result, elapsed, cleaned, left, after = asyncio.run(go())
    assert result.status in ("timeout", "nonzero_exit")
    assert elapsed <= 4.0, f"returned after {elapsed:.2f} s"
    assert cleaned, f"{left} processes of the bomb outlived its exec"
    assert after.ok and after.stdout == "next\n"
    assert len(_processes()) <= before + 10, "near the count before (other work on the host may add a few)"
    assert subprocess.run(["true"]).returncode == 0


def test_huge_output_is_cut():
    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            return await sandbox.exec("yes | head -c 50000000")

    result = asyncio.run(go())
    assert result.status == "output_truncated" and result.truncated
    assert 0 < len(result.stdout) <= LIMITS.max_output_bytes


def test_rlimits_bound_memory_and_file_size():
    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            memory = await sandbox.exec(["python3", "-c", "b = bytearray(512 << 20)"])
            big_file = await sandbox.exec("dd if=/dev/zero of=/work/fill bs=1M count=64")
            return memory, big_file

    memory, big_file = asyncio.run(go())
    # No cgroup: running out of memory is the command's own failure, never "oom".
    assert memory.status == "nonzero_exit" and "MemoryError" in memory.stderr
    assert big_file.status == "nonzero_exit"


def test_host_environment_does_not_reach_the_sandbox(monkeypatch):
    secret = "s3cret-value"
    monkeypatch.setenv("RLAIF_TEST_SECRET", secret)

    async def go():
        async with await LocalSandbox.start(LIMITS) as sandbox:
            inside = await sandbox.exec("env; cat /proc/*/environ 2>/dev/null")
            environs = {}
            for pid in _tree(sandbox.process.pid):  # read from the host: the executor's is unreadable inside
                try:
                    environs[pid] = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
            return inside, environs

    inside, environs = asyncio.run(go())
    assert "PATH=" in inside.stdout
    assert secret not in inside.stdout + inside.stderr and "RLAIF_TEST_SECRET" not in inside.stdout
    assert len(environs) >= 3, "bwrap, its reaper and the executor"
    for pid, environ in environs.items():
        assert secret.encode() not in environ and b"RLAIF_TEST_SECRET" not in environ, pid
        names = {item.partition(b"=")[0] for item in environ.split(b"\0") if item}
        assert names <= {b"PATH", b"LANG", b"PWD"}, (pid, names)  # bwrap sets PWD for --chdir


def test_close_leaves_nothing():
    async def go():
        sandbox = await LocalSandbox.start(LIMITS)
        busy = asyncio.ensure_future(sandbox.exec("sleep 30"))
        await asyncio.sleep(0.2)
        tree = _tree(sandbox.process.pid)
        await sandbox.close()
        result = await busy
        await sandbox.close()
        return sandbox, tree, result

    sandbox, tree, result = asyncio.run(go())
    assert len(tree) >= 4, "bwrap, its reaper, the executor and the command"
    assert result.status == "infra_error"
    assert not set(_processes()) & tree, "a process of the sandbox survived close()"
    assert not sandbox.socket_dir.exists()
    assert not any(p.name.startswith(sandbox.id) for p in SOCKET_ROOT.iterdir())


def test_lifetime_ends_the_sandbox():
    async def go():
        sandbox = await LocalSandbox.start(Limits(lifetime_s=1.0))
        first = await sandbox.alive()
        await asyncio.wait_for(sandbox.process.wait(), 5)
        later = await sandbox.alive()
        await sandbox.close()
        return first, later

    assert asyncio.run(go()) == (True, False)


def test_pool_starts_local_sandboxes():
    async def go():
        sandbox = await start_sandbox("local", "no-image-needed", LIMITS)
        try:
            return sandbox.backend, await sandbox.exec(["echo", "pooled"])
        finally:
            await sandbox.close()

    backend, result = asyncio.run(go())
    assert backend == "local" and result.ok and result.stdout == "pooled\n"


def test_start_failures_are_sandbox_errors(monkeypatch):
    before = set(SOCKET_ROOT.iterdir()) if SOCKET_ROOT.exists() else set()
    monkeypatch.setattr(local_backend, "EXECUTOR", Path("/nonexistent/executor.py"))
    with pytest.raises(SandboxError, match=r"exited at start.*nonexistent"):
        asyncio.run(LocalSandbox.start(LIMITS))
    assert set(SOCKET_ROOT.iterdir()) <= before, "the socket folder of a failed start was left"

    monkeypatch.setattr(local_backend.shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(SandboxError, match="bubblewrap is not installed"):
        asyncio.run(LocalSandbox.start(LIMITS))


PING_ONLY_EXECUTOR = """
import argparse, socket
parser = argparse.ArgumentParser()
parser.add_argument("--socket")
args, _ = parser.parse_known_args()
server = socket.socket(socket.AF_UNIX)
server.bind(args.socket)
server.listen(8)
while True:
    conn, _ = server.accept()
    conn.makefile("rb").readline()
    conn.sendall(b'{"status": "ok"}\\n')
    conn.close()
"""


def test_a_sandbox_without_its_own_pid_namespace_is_refused(monkeypatch, tmp_path):
    # The real executor's kill(-1) would reach every process on the host here, so this runs a stand-in
    # that only answers pings, and the refusal must come before any command.
    stub = tmp_path / "ping_only_executor.py"
    stub.write_text(PING_ONLY_EXECUTOR)
    full_argv, check = local_backend.bwrap_argv, LocalSandbox._check_pid_namespace
    seen = []

    def recording_check(sandbox: LocalSandbox) -> None:
        seen.append((sandbox.process.pid, sandbox.init_pid))
        check(sandbox)

    monkeypatch.setattr(local_backend, "EXECUTOR", stub)
    monkeypatch.setattr(local_backend, "bwrap_argv",
                        lambda *args: [arg for arg in full_argv(*args) if arg != "--unshare-pid"])
    monkeypatch.setattr(LocalSandbox, "_check_pid_namespace", recording_check)
    with pytest.raises(SandboxError, match="pid namespace of its own"):
        asyncio.run(LocalSandbox.start(LIMITS))
    assert len(seen) == 1 and None not in seen[0]
    assert _wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in seen[0])), "not stopped"
