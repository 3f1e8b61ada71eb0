"""Docker sandboxes: the interface, the hostile-program suite, infrastructure faults and cleanup.

Every hostile case asserts the exact failure kind, that the call returned within timeout + 1 s, that
the host is unaffected, and that nothing of the sandbox is left (container or process) once it is
released. All of them share one pool; after the suite, the next exec in that pool still works.
No test sends traffic anywhere: the network check only reads the sandbox's interfaces.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rlaif.sandbox.base import SOCKET_ROOT, Limits, SandboxError
from rlaif.sandbox.docker_backend import DockerSandbox
from rlaif.sandbox.engine import sandbox_containers
from rlaif.sandbox.pool import SandboxPool

pytestmark = pytest.mark.docker
RUN_ID = f"test-{uuid.uuid4().hex[:8]}"
LIMITS = Limits(memory_mb=256, pids=64, timeout_s=10, max_output_bytes=1 << 20, work_mb=32, tmp_mb=16)
SECRET = "sk-ant-test-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def pool(loop, docker_engine, base_image):
    os.environ["ANTHROPIC_API_KEY"] = SECRET  # a host secret that must never reach a sandbox
    pool = SandboxPool(base_image, LIMITS, size=2, run_id=RUN_ID)
    loop.run_until_complete(pool.__aenter__())
    yield pool
    loop.run_until_complete(pool.close())
    os.environ.pop("ANTHROPIC_API_KEY", None)


def _host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in found if pid != os.getpid()]


def hostile(loop, pool, docker_engine, cmd: str, timeout: float):
    """Run `cmd` (which must carry its own marker) in a pooled sandbox; check the sandbox leaves nothing."""
    marker = f"rlaif-hostile-{uuid.uuid4().hex[:8]}"
    cmd = cmd.replace("MARKER", marker)

    async def go():
        async with pool.sandbox() as sandbox:
            start = time.monotonic()
            result = await sandbox.exec(cmd, timeout=timeout)
            elapsed = time.monotonic() - start
            alive_after = await sandbox.alive()
        await pool.settle()
        return sandbox, result, elapsed, alive_after

    sandbox, result, elapsed, alive_after = loop.run_until_complete(go())
    assert elapsed <= timeout + 1.0, f"returned after {elapsed:.2f} s"
    assert not sandbox_containers(sandbox=sandbox.id), "the container was not removed"
    assert not _host_processes_with(marker), "a sandboxed process survived on the host"
    assert not any(p.name.startswith(sandbox.id) for p in SOCKET_ROOT.iterdir())
    return result, alive_after


def test_exec_is_fast_and_exact(loop, pool):
    async def go():
        async with pool.sandbox() as sandbox:
            result = await sandbox.exec(["python3", "-c", "import sys; print(6 * 7); print('e', file=sys.stderr)"])
            shell = await sandbox.exec("echo $HOME; pwd; id -u; exit 3")
            missing = await sandbox.exec(["no-such-program"])
            return result, shell, missing

    result, shell, missing = loop.run_until_complete(go())
    assert (result.status, result.exit_code, result.stdout, result.stderr) == ("ok", 0, "42\n", "e\n")
    assert (shell.status, shell.exit_code, shell.stdout) == ("nonzero_exit", 3, "/work\n/work\n1000\n")
    assert missing.status == "nonzero_exit" and missing.exit_code == 127


def test_files_round_trip_and_diff(loop, pool):
    async def go():
        async with pool.sandbox() as sandbox:
            await sandbox.write_files({"pkg/mod.py": "def f():\n    return 1\n", "data.bin": bytes(range(256))})
            before = await sandbox.read_tree()
            edit = await sandbox.exec("sed -i 's/return 1/return 2/' pkg/mod.py && echo new > added.txt && rm data.bin")
            after = await sandbox.read_tree()
            diff = await sandbox.diff(before)
            one = await sandbox.read_file("/work/pkg/mod.py")
            with pytest.raises(SandboxError, match="no/such"):
                await sandbox.read_file("/work/no/such")
            return before, edit, after, diff, one

    before, edit, after, diff, one = loop.run_until_complete(go())
    assert before == {"pkg/mod.py": b"def f():\n    return 1\n", "data.bin": bytes(range(256))}
    assert edit.ok
    assert after == {"pkg/mod.py": b"def f():\n    return 2\n", "added.txt": b"new\n"}
    assert "-    return 1\n+    return 2\n" in diff and "+new\n" in diff and "data.bin" in diff
    assert one == b"def f():\n    return 2\n"


def test_infinite_loop_times_out(loop, pool, docker_engine):
    result, alive = hostile(loop, pool, docker_engine, "python3 -c 'while True: pass' MARKER", timeout=2)
    assert result.status == "timeout" and alive


def test_fork_bomb_times_out_and_host_can_still_fork(loop, pool, docker_engine):
    bomb = "python3 -c 'import os\nwhile True:\n    try: os.fork()\n    except OSError: pass' MARKER"
    result, alive = hostile(loop, pool, docker_engine, bomb, timeout=3)
    assert result.status == "timeout" and alive
    assert subprocess.run(["true"]).returncode == 0


def test_memory_bomb_is_oom(loop, pool, docker_engine):
    bomb = "python3 -c 'a = []\nwhile True: a.append(bytearray(8 << 20))' MARKER"
    result, alive = hostile(loop, pool, docker_engine, bomb, timeout=10)
    assert result.status == "oom" and alive


def test_gigabytes_of_output_are_cut(loop, pool, docker_engine):
    result, alive = hostile(loop, pool, docker_engine, "yes MARKER", timeout=10)
    assert result.status == "output_truncated" and result.truncated and alive
    assert len(result.stdout) + len(result.stderr) <= LIMITS.max_output_bytes


def test_disk_filling_write_hits_the_work_limit(loop, pool, docker_engine):
    fill = "dd if=/dev/zero of=/work/fill bs=1M count=4096 # MARKER"
    result, alive = hostile(loop, pool, docker_engine, fill, timeout=10)
    assert result.status == "nonzero_exit" and "No space left" in result.stderr and alive


def test_writing_outside_the_work_directory_fails(loop, pool, docker_engine):
    result, alive = hostile(loop, pool, docker_engine, "touch /etc/passwd-planted # MARKER", timeout=5)
    assert result.status == "nonzero_exit" and "Read-only file system" in result.stderr and alive
    probe = ("for p in /etc/x /usr/x /opt/x /x /home/sandbox/x /run/rlaif/x /opt/rlaif/executor.py; do "
             "touch $p 2>/dev/null && echo WROTE $p; done; "
             "python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('/run/rlaif/executor.sock')\" "
             "2>/dev/null && echo REACHED executor; touch /work/ok /tmp/ok && echo work-and-tmp-writable # MARKER")
    result, _ = hostile(loop, pool, docker_engine, probe, timeout=5)
    assert result.stdout == "work-and-tmp-writable\n", "nothing outside /work and /tmp is writable"


def test_host_environment_does_not_reach_the_sandbox(loop, pool, docker_engine):
    assert os.environ["ANTHROPIC_API_KEY"] == SECRET
    result, _ = hostile(loop, pool, docker_engine, "env; cat /proc/[0-9]*/environ; echo MARKER", timeout=5)
    assert "PATH=" in result.stdout
    assert SECRET not in result.stdout + result.stderr and "ANTHROPIC" not in result.stdout


def test_killing_pid_1_and_everything_visible_leaves_the_sandbox_working(loop, pool, docker_engine):
    every_pid = ("import os, signal\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) != os.getpid():\n"
                 "        try: os.kill(int(p), signal.SIGKILL); print('killed', p)\n        except OSError: pass")

    async def go():
        async with pool.sandbox() as sandbox:
            killed = await sandbox.exec("kill -9 1; kill -9 -1; echo survived # MARKER", timeout=5)
            walked = await sandbox.exec(["python3", "-c", every_pid, "MARKER"], timeout=5)
            after = await sandbox.exec(["python3", "-c", "print('still here')"])
            return killed, walked, after

    killed, walked, after = loop.run_until_complete(go())
    # kill(-1) never signals the caller, so the shell lives on; PID 1 and the executor are out of its reach.
    assert killed.status == "ok" and killed.stdout == "survived\n" and "Operation not permitted" in killed.stderr
    assert walked.status == "ok" and walked.stdout == "", "no process but its own is within its reach"
    assert after.ok and after.stdout == "still here\n"


def test_children_do_not_outlive_their_exec(loop, pool):
    async def go():
        async with pool.sandbox() as sandbox:
            detached = await sandbox.exec("setsid sh -c 'sleep 100' >/dev/null 2>&1 </dev/null & echo started",
                                          timeout=2)
            holding = await sandbox.exec("sh -c 'sleep 100 &'; echo started", timeout=2)
            survivors = await sandbox.exec("grep -l 'slee[p]' /proc/[0-9]*/cmdline || true")
            return detached, holding, survivors

    start = time.monotonic()
    detached, holding, survivors = loop.run_until_complete(go())
    assert detached.status == "ok" and detached.stdout == "started\n"
    assert holding.status == "timeout", "a child holding the output open runs into the timeout and dies"
    assert survivors.stdout.strip() in ("", "/proc/self/cmdline"), survivors.stdout
    assert time.monotonic() - start < 2 + 1 + 5


def test_the_only_network_interface_is_loopback(loop, pool, docker_engine):
    result, _ = hostile(loop, pool, docker_engine, "ls /sys/class/net; tail -n +2 /proc/net/route # MARKER", timeout=5)
    assert result.status == "ok" and result.stdout == "lo\n"


def test_the_pool_still_works_after_the_hostile_suite(loop, pool):
    result = loop.run_until_complete(pool.run(["python3", "-c", "print(1)"]))
    assert result.ok and result.stdout == "1\n"


def test_a_dying_container_is_an_infra_error_and_the_pool_retries_on_a_fresh_one(loop, pool, docker_engine):
    killed = []

    async def kill_first_sandbox_mid_command():
        while not pool._in_use:
            await asyncio.sleep(0.01)
        victim = next(iter(pool._in_use))
        await asyncio.sleep(0.3)
        killed.append(victim.id)
        await asyncio.to_thread(victim.container.kill)

    async def go():
        before = pool.stats["infra_retries"]
        killer = asyncio.ensure_future(kill_first_sandbox_mid_command())
        result = await pool.run("sleep 1; echo done", timeout=5)
        await killer
        return result, pool.stats["infra_retries"] - before

    result, retries = loop.run_until_complete(go())
    assert killed and result.ok and result.stdout == "done\n"
    assert retries == 1


def test_exec_on_a_dead_sandbox_is_infra_error_not_a_score(loop, base_image):
    async def go():
        sandbox = await DockerSandbox.start(base_image, LIMITS, run_id=RUN_ID)
        try:
            await asyncio.to_thread(sandbox.container.kill)
            return await sandbox.exec("echo hi"), await sandbox.alive()
        finally:
            await sandbox.close()

    result, alive = loop.run_until_complete(go())
    assert result.status == "infra_error" and result.exit_code is None and not alive


def test_missing_image_is_a_clear_error_and_pulls_nothing(loop, docker_engine):
    with pytest.raises(SandboxError, match="image rlaif/base:none is not in the Docker engine; build it with `rlaif "
                       "sandbox build`"):
        loop.run_until_complete(DockerSandbox.start("rlaif/base:none", LIMITS, run_id=RUN_ID))
    assert not sandbox_containers(run=RUN_ID, sandbox="x")


def test_closing_the_pool_removes_its_containers(loop, docker_engine, base_image):
    run_id = f"close-{uuid.uuid4().hex[:8]}"

    async def go():
        async with SandboxPool(base_image, LIMITS, size=3, run_id=run_id) as pool:
            sandbox = await pool.acquire()  # one in use, others warm
            await pool.settle()
            started = len(sandbox_containers(run=run_id))
            assert await sandbox.alive()
        return started

    assert loop.run_until_complete(go()) >= 3
    assert not sandbox_containers(run=run_id)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_one_shot_cli_cleans_up_when_interrupted(docker_engine, base_image, sig):
    proc = subprocess.Popen([sys.executable, "-m", "rlaif.cli", "sandbox", "run", "--image", base_image, "--",
                             "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    owner = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and owner is None:
        for container in sandbox_containers(run="cli"):
            if container.labels["rlaif.owner"].endswith(f":{proc.pid}") and container.status == "running":
                owner = container.labels["rlaif.owner"]
        time.sleep(0.1)
    assert owner, "the sandbox never started"
    time.sleep(0.3)
    proc.send_signal(getattr(__import__("signal"), sig))
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        py_spy = Path(sys.executable).with_name("py-spy")
        stacks = (subprocess.run([py_spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True).stdout
                  if py_spy.exists() else "(no py-spy)")
        proc.kill()
        pytest.fail(f"{sig} did not end `rlaif sandbox run` within 30 s; its stacks:\n{stacks}\n"
                    f"stderr: {proc.communicate()[1].decode(errors='replace')[-2000:]}")
    assert not [c for c in sandbox_containers(run="cli") if c.labels["rlaif.owner"] == owner]


def test_gc_removes_orphans_of_a_killed_process(docker_engine, base_image):
    proc = subprocess.Popen([sys.executable, "-m", "rlaif.cli", "sandbox", "run", "--image", base_image, "--",
                             "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    mine = []
    while time.monotonic() < deadline and not mine:
        mine = [c for c in sandbox_containers(run="cli") if c.labels["rlaif.owner"].endswith(f":{proc.pid}")]
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    assert mine and sandbox_containers(sandbox=mine[0].labels["rlaif.sandbox"])
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "sandbox", "gc"], capture_output=True, text=True)
    assert done.returncode == 0 and f"removed {mine[0].name}" in done.stdout
    assert not sandbox_containers(sandbox=mine[0].labels["rlaif.sandbox"])


def test_cli_json_result(base_image):
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "sandbox", "run", "--json", "--image", base_image,
                           "--timeout", "1", "--", "sleep", "5"], capture_output=True, text=True)
    result = json.loads(done.stdout)
    assert done.returncode == 1
    assert result["status"] == "timeout" and result["truncated"] is False
    assert {"status", "exit_code", "stdout", "stderr", "duration_s", "truncated"} <= set(result)
