"""Nothing outlives a killed driver: its processes (Ray's agents included) and its sandboxes go with it.

Every test looks only at processes carrying its own owner token, so other tests' Ray instances (and
other runs on this machine) neither disturb nor satisfy it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlaif.cluster.reaper import OWNER_VAR, _marked, sweep_orphans, token_alive, token_of

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    """This environment without an owner mark (the pytest process may carry one), plus `extra`."""
    env = {key: value for key, value in os.environ.items() if key != OWNER_VAR}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _owned_by(token: str) -> set[int]:
    return {pid for pid, (owner, _) in _marked().items() if owner == token}


def _poll(condition, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


DRIVER = """
import subprocess, sys, time
from rlaif.cluster import reaper
reaper.watch_this_process()
reaper.watch_this_process()  # idempotent: still one reaper
child = subprocess.Popen(["sleep", "300"], start_new_session=True)
print(child.pid, reaper._reaper.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.unit
def test_kill_9_of_the_driver_stops_what_it_started(tmp_path):
    with (tmp_path / "stderr").open("w") as sink:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=_env(), cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=sink, text=True)
    try:
        child, reaper = (int(pid) for pid in driver.stdout.readline().split())
        child_token, reaper_token, driver_token = token_of(child), token_of(reaper), token_of(driver.pid)
        assert child_token and reaper_token and driver_token
        assert _owned_by(driver_token) == {child}  # the reaper carries no mark: it is not its own prey
        driver.kill()
        killed = time.monotonic()
        assert _poll(lambda: not token_alive(child_token), 10), "the grandchild outlived the killed driver"
        gone_s = time.monotonic() - killed
        assert _poll(lambda: not token_alive(reaper_token), 10), "the reaper did not exit"
        print(f"grandchild gone {gone_s:.2f}s after kill -9")
    finally:
        driver.kill()
        driver.wait()
        sweep_orphans()
    said = (tmp_path / "stderr").read_text()
    assert f"the driver (pid {driver.pid}) exited; stopped 1 processes" in said, said


@pytest.mark.unit
def test_sweep_stops_only_dead_owners_processes():
    dead = subprocess.Popen(["sleep", "300"], env=_env(**{OWNER_VAR: "999999999:1"}))
    live = subprocess.Popen(["sleep", "300"], env=_env(**{OWNER_VAR: token_of(os.getpid())}))
    try:
        assert _poll(lambda: {dead.pid, live.pid} <= set(_marked()), 5)
        stopped = sweep_orphans()
        assert f"pid {dead.pid} (sleep 300)" in stopped
        assert not any(f"pid {live.pid} " in line for line in stopped)
        assert dead.wait(timeout=10) == -signal.SIGTERM
        assert live.poll() is None
    finally:
        for proc in (dead, live):
            proc.kill()
            proc.wait()


def _rlaif_containers() -> list:
    from rlaif.sandbox.engine import sandbox_containers

    return sandbox_containers()


def _owner_pid(container) -> int | None:
    owner = container.labels.get("rlaif.owner", "")
    host, _, pid = owner.rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


@pytest.mark.e2e
@pytest.mark.ray
@pytest.mark.docker
@pytest.mark.vllm
def test_kill_9_of_rlaif_train_leaves_no_process_or_sandbox(tiny_model, docker_engine, base_image, tmp_path):
    log = tmp_path / "train.log"
    with log.open("w") as sink:
        driver = subprocess.Popen([str(REPO / ".venv" / "bin" / "rlaif"), "train", "examples/cpu-tiny.yaml",
                                   f"run.root={tmp_path / 'runs'}", "learner.steps=50"],
                                  env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=sink)
    token = token_of(driver.pid)
    try:
        assert token
        marked: set[int] = set()
        containers: list = []

        def going() -> bool:  # Ray's processes and the run's sandboxes (owned by its Ray workers) both exist
            nonlocal marked, containers
            marked = _owned_by(token)
            containers = [c for c in _rlaif_containers() if c.status == "running" and _owner_pid(c) in marked]
            return driver.poll() is not None or bool(marked and containers)

        assert _poll(going, 240, step=0.5) and driver.poll() is None, log.read_text()[-3000:]
        time.sleep(2)  # well into the run
        going()
        marked_tokens = {pid: token_of(pid) for pid in marked}
        titles = {pid: (Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]).decode() for pid in marked}
        agents = [pid for pid, title in titles.items() if title.startswith("ray::")]
        assert marked and containers and agents, titles
        print(f"before the kill: {len(marked)} marked processes ({len(agents)} ray::), {len(containers)} sandboxes")

        driver.kill()
        killed = time.monotonic()

        def clean() -> bool:
            if _owned_by(token) or any(t and token_alive(t) for t in marked_tokens.values()):
                return False
            return not [c for c in _rlaif_containers() if _owner_pid(c) in marked]

        assert _poll(clean, 60, step=0.25), (
            f"left: processes {sorted(_owned_by(token))}, "
            f"containers {[(c.name, c.status) for c in _rlaif_containers() if _owner_pid(c) in marked]}")
        print(f"everything gone {time.monotonic() - killed:.1f}s after kill -9")
        orphans = [c.name for c in _rlaif_containers() if (pid := _owner_pid(c)) is not None and token_of(pid) is None]
        assert not orphans, orphans  # no container whose owner is dead, this run's or any other's
        assert _poll(lambda: "rlaif: the driver (pid" in log.read_text(), 10), log.read_text()[-2000:]
        print(log.read_text().strip().splitlines()[-1])
    finally:
        driver.kill()
        driver.wait()
        sweep_orphans()
