"""The reward service: the same grading code in Ray actors (a worker killed mid-run loses nothing) and behind
HTTP (bearer token, loopback), with the real sandboxes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from rlaif.core.config import load_config
from rlaif.env import Submission
from rlaif.registry import load_environment
from rlaif.types import Message
from rlaif_rewards.cost import BudgetExhausted
from rlaif_rewards.http_front import HttpRewardClient
from rlaif_rewards.service import RewardService
from tests.support.fault_server import JudgeEndpoint, Reply
from tests.test_judge_budget import COST, TOKENS, judge_config

pytestmark = [pytest.mark.docker, pytest.mark.ray]


def pyfunc_cases(n: int, slow_from: int | None = None):
    """`n` pyfunc cases, alternately right and wrong; those from `slow_from` on sleep 0.5 s on import, so a test
    can be sure they are still in flight when it acts."""
    env = load_environment("pyfunc", {"generated": n})
    tasks = env.tasks("train")[:n]
    cases = []
    for i, task in enumerate(tasks):
        right = i % 2 == 0
        code = task.reference if right else f"def {task.data['entry_point']}(*a):\n    return None\n"
        if slow_from is not None and i >= slow_from:
            code = "import time\ntime.sleep(0.5)\n" + code
        cases.append((task, Submission(messages=[Message(role="assistant", content=code)],
                                       files={"solution.py": code.encode()}), 1.0 if right else 0.0))
    return cases


def test_ray_workers_grade_and_a_killed_worker_loses_nothing(ray_local, base_image, tmp_path):
    import ray

    config = load_config(None, ["model.path=models/tiny", "env.name=pyfunc", "env.args.generated=12",
                                "sandbox.pool_size=2"])
    cases = pyfunc_cases(12, slow_from=4)

    async def go():
        service = RewardService(config, workers=2, num_cpus=0.5)
        try:
            await service.start()
            first = await asyncio.gather(*(service.grade(t, s) for t, s, _ in cases[:4]))
            pending = [asyncio.ensure_future(service.grade(t, s)) for t, s, _ in cases[4:]]
            await asyncio.sleep(0.2)  # each worker has two of its four slow calls running, two waiting
            ray.kill(service.actors[0], no_restart=False)  # a worker dies mid-run; Ray restarts it
            rest = await asyncio.gather(*pending)
            return [*first, *rest], dict(service.stats)
        finally:
            await service.close()

    results, stats = asyncio.run(go())
    assert [r.total for r in results] == [expected for _, _, expected in cases]
    assert all(r.status == "ok" for r in results)
    assert stats["graded"] == len(cases) and stats.get("failed", 0) == 0, "each case graded exactly once"
    assert stats["worker_failures"] >= 1, "calls in flight on the killed worker were retried elsewhere"


def test_http_front_needs_the_token_and_grades(base_image, tmp_path):
    config = tmp_path / "reward.yaml"
    config.write_text("model: {path: models/tiny}\nenv: {name: pyfunc, args: {generated: 6}}\n"
                      "sandbox: {pool_size: 1}\n")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "test-token-" + os.urandom(8).hex()
    server = subprocess.Popen([sys.executable, "-m", "rlaif.cli", "reward", "serve", str(config), "--port", str(port)],
                              env={**os.environ, "RLAIF_REWARD_TOKEN": token}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()[-2000:]
                time.sleep(0.3)
        listening = subprocess.run(["ss", "-ltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening
        cases = pyfunc_cases(4)

        async def go():
            right, wrong = HttpRewardClient(url, token), HttpRewardClient(url, "wrong-token")
            try:
                graded = await asyncio.gather(*(right.grade(t, s) for t, s, _ in cases))
                refused = await wrong.grade(*cases[0][:2])
                return graded, refused
            finally:
                await right.close()
                await wrong.close()

        graded, refused = asyncio.run(go())
        assert [r.total for r in graded] == [expected for _, _, expected in cases]
        assert refused.status == "infra_error" and "401" in refused.details["error"]
        assert token not in refused.details["error"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_service_refuses_to_start_without_a_token(tmp_path):
    config = tmp_path / "reward.yaml"
    config.write_text("model: {path: models/tiny}\n")
    env = {k: v for k, v in os.environ.items() if k != "RLAIF_REWARD_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "reward", "serve", str(config), "--port", "1"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("error: RLAIF_REWARD_TOKEN is not set; the reward service refuses to run "
                                        "without a token")


def test_three_reward_workers_and_a_restart_spend_one_budget(ray_local, base_image):
    """The reward service's workers ask the run's ledger actor: a budget of `n` calls gives at most `n` calls in
    all, a worker restarted by Ray does not start again at $0, and the rest are refused as `BudgetExhausted`
    (not graded as infra_error, not retried)."""
    import ray

    n = 6
    cases = pyfunc_cases(12)
    with JudgeEndpoint(Reply(text='{"score": 1, "reason": "ok"}', input_tokens=TOKENS, output_tokens=0)) as endpoint:
        judge = judge_config(endpoint.url, budget_usd=n * COST).model_dump()
        config = load_config(None, ["model.path=models/tiny", "env.name=pyfunc", "env.args.generated=12",
                                    "sandbox.pool_size=1", f"reward.judges=[{json.dumps(judge)}]",
                                    'reward.components=[{"kind": "judge", "judge": "j", "weight": 0.1}]'])

        async def go():
            service = RewardService(config, workers=3, num_cpus=0.1)
            try:
                await service.start()
                first = await asyncio.gather(*(service.grade(t, s) for t, s, _ in cases[:3]))
                ray.kill(service.actors[0], no_restart=False)  # Ray restarts it, with a new judge
                rest = await asyncio.gather(*(service.grade(t, s) for t, s, _ in cases[3:]), return_exceptions=True)
                return first, rest, await service.ledger.spend()
            finally:
                await service.close()

        first, rest, spend = asyncio.run(go())
    assert all(r.status == "ok" and r.components["judge"] == 1.0 for r in first)
    graded = [r for r in rest if not isinstance(r, BaseException)]
    refused = [r for r in rest if isinstance(r, BudgetExhausted)]
    assert len(graded) + len(refused) == len(rest) and refused, rest
    assert all(r.status == "ok" for r in graded), "a budget that ran out is never an infra_error score"
    assert len(endpoint.requests) == spend["j"]["calls"] == 3 + len(graded) <= n
    assert spend["j"]["spent_usd"] <= n * COST + 1e-12
