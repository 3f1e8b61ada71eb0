"""`rlaif launch` against a real multi-node Ray cluster on 127.0.0.1 (`ray.cluster_utils.Cluster`).

The cluster: a head (the learner's node, custom resource `head`) and two worker nodes, each with `rollout` and
`sandbox` resources. The main test submits a tiny CPU run through the Job API, kills the node that holds the
rollout worker mid-run, and checks that the run completes its steps anyway, with the loss counted and no
group trained twice. The others check that bad submissions fail early and leave nothing on the cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rlaif.cluster.local_ray import LOOPBACK_ENV

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """Head + two `rollout`/`sandbox` nodes, all on 127.0.0.1; yields (Cluster, dashboard URL)."""
    os.environ.update(LOOPBACK_ENV)
    # Job drivers run `rlaif` from the PATH the cluster's processes inherit.
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    from ray.cluster_utils import Cluster

    port = _free_port()
    # the head's agent on a free port: Ray's default (52365) is taken while another Ray instance runs (ray_local)
    c = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 2, "resources": {"head": 1}, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": port, "dashboard_agent_listen_port": _free_port(),
        # a killed node is found dead after 3 missed 1 s health checks, not Ray's 5 of 3 s
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
    for _ in range(2):
        c.add_node(num_cpus=2, resources={"rollout": 1, "sandbox": 1})
    address = f"http://127.0.0.1:{port}"
    _wait_for_dashboard(address)
    yield c, address
    c.shutdown()


def _wait_for_dashboard(address: str) -> None:
    from ray.job_submission import JobSubmissionClient

    for _ in range(60):
        try:
            JobSubmissionClient(address)
            return
        except (ConnectionError, RuntimeError):
            time.sleep(1)
    raise RuntimeError(f"the test cluster's dashboard did not answer at {address}")


def _rlaif(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "rlaif"), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "RAY_API_SERVER_ADDRESS": "", **env})


def _config(tmp_path: Path, tiny_model: Path, **train: object) -> Path:
    config = {
        "run": {"name": "launched", "root": str(tmp_path / "runs")},
        "model": {"path": str(tiny_model)},
        "env": {"name": "pyfunc", "args": {"generated": 40}},
        "sandbox": {"backend": "local", "pool_size": 2},
        "rollout": {"group_size": 4, "max_tokens": 32},
        "learner": {"lr": 1e-3, "steps": 6, "batch_tasks": 2, "dynamic_sampling": False},
        "reward": {"components": [{"kind": "length", "max_chars": 60, "weight": 0.5}]},
        "train": {"mode": "async", "max_staleness": 1, "checkpoint_every": 2, "learner_cpus": 0.5,
                  "learner_resources": {"head": 1}, "rollout_cpus": 0.5, "rollout_resources": {"rollout": 1},
                  "reward_cpus": 0.25, "reward_resources": {"sandbox": 1}, "episode_concurrency": 16, **train},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _jobs(address: str) -> list:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address).list_jobs()


def _alive_actors(address: str, class_name: str) -> list:
    from ray.util.state import list_actors

    return list_actors(address=address, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
                       raise_on_missing_output=False)


def _wait_for(runs: Path, done: Callable[[dict], bool], job: subprocess.Popen, timeout: float = 400) -> Path:
    """The run directory, once a metrics row satisfies `done`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for metrics in runs.glob("launched-*/metrics.jsonl"):
            if any(done(json.loads(line)) for line in metrics.read_text().splitlines() if line.strip()):
                return metrics.parent
        assert job.poll() is None or job.returncode == 0, job.stdout.read() if job.stdout else ""
        time.sleep(0.5)
    raise AssertionError(f"no such metrics row within {timeout} s")


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_launch_survives_a_lost_node_and_resumes_after_a_lost_learner(cluster, tiny_model, tmp_path):
    """One run, two faults: the nodes holding the rollout worker and the reward worker die at step 2 (the run
    goes on once the worker is back), then the learner dies (the job fails, naming the resume), and
    `rlaif launch --resume` finishes it."""
    c, address = cluster
    config = _config(tmp_path, tiny_model, checkpoint_every=1)
    secret = "sk-rlaif-test-5ec2e7"
    env = {**os.environ, "RLAIF_TEST_SECRET": secret}
    launch = [str(BIN / "rlaif"), "launch", str(config), "--address", address, "--follow", "learner.steps=8",
              "launch.env_vars=[RLAIF_TEST_SECRET]"]
    job = subprocess.Popen(launch, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = _wait_for(tmp_path / "runs", lambda row: row["step"] >= 2, job)
    held = {a.node_id for name in ("RolloutWorker", "Rewarder") for a in _alive_actors(address, name)}
    for victim in [n for n in c.worker_nodes if n.node_id in held]:
        c.remove_node(victim, allow_graceful=False)  # SIGKILL: actors, engine and sandboxes die with the node
        c.add_node(num_cpus=2, resources={"rollout": 1, "sandbox": 1})  # as many sandbox nodes as before
    killed_at = _metrics(run)[-1]
    # the worker is back (engine restarted, current weights) and has trained a step since
    _wait_for(tmp_path / "runs", lambda row: row.get("lost_total/rollout_worker_restarted", 0) >= 1
              and row["step"] > killed_at["step"] + 1, job)
    [learner] = _alive_actors(address, "Learner")
    os.kill(learner.pid, signal.SIGKILL)
    out, _ = job.communicate(timeout=600)
    assert job.returncode == 1, out[-3000:]
    assert "error: a learner died (" in out
    assert f"continue it from its last checkpoint with `rlaif train --resume {run}`" in out
    before = _metrics(run)
    assert before[-1]["lost_total/rollout_worker"] >= 1 and before[-1]["lost_total/rollout_worker_restarted"] >= 1
    # the reward worker lost with its node came back: grading went on after the loss
    assert before[-1]["reward_service/graded"] > killed_at["reward_service/graded"]

    resumed = _rlaif("launch", "--resume", str(run), "--address", address, "--follow", timeout=600,
                     RLAIF_TEST_SECRET=secret)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    rows = _metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 9))
    last = rows[-1]
    assert last["lost_total/rollout_worker"] >= 1  # restored from the checkpoint the resume started from
    trained = [g for r in rows for g in r["trained_groups"]]
    assert len(trained) == len(set(trained)), "a group was trained twice"
    lines = [json.loads(line) for line in (run / "trajectories.jsonl").read_text().splitlines()]
    infra = {t["group_index"] for t in lines if t["dropped"] == "infra_error"}
    # episodes in flight on the lost node (if any were: a sync can be what finds the worker gone) are counted
    assert not infra & set(trained), "a group lost with the node was trained"
    assert last.get("dropped_total/infra_error", 0) == len(infra)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000007", "step-000008"]
    assert (run / "model" / "config.json").is_file() and (run / "tb").is_dir()
    assert not _alive_actors(address, "RolloutWorker") and not _alive_actors(address, "Learner")

    from ray.job_submission import JobSubmissionClient

    first = next(j for j in _jobs(address) if j.entrypoint.endswith("rlaif-job.yaml") and j.status == "FAILED")
    assert JobSubmissionClient(address).get_job_info(first.submission_id).runtime_env["env_vars"] == {
        "RLAIF_TEST_SECRET": secret}  # the job has it; nothing rlaif writes or prints does
    logs = JobSubmissionClient(address).get_job_logs(first.submission_id)
    written = [p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".yaml", ".json")]
    assert secret not in out + logs + resumed.stdout + resumed.stderr
    assert not any(secret.encode() in data for data in written)


def test_a_layout_the_cluster_cannot_hold_is_refused_before_submission(cluster, tiny_model, tmp_path):
    _, address = cluster
    before = len(_jobs(address))
    config = _config(tmp_path, tiny_model)
    gpus = _rlaif("launch", str(config), "--address", address, "train.rollout_gpus=1")
    assert gpus.returncode != 0
    assert gpus.stderr.strip().splitlines()[-1] == (
        "error: the run needs 1 GPU (rollout workers 1) but the Ray cluster has 0; lower train.rollout_gpus or "
        "add nodes")
    sandboxes = _rlaif("launch", str(config), "--address", address, "train.reward_workers=3")
    assert "error: the run needs 3 sandbox (reward workers 3) but the Ray cluster has 2" in sandboxes.stderr
    colocated = _rlaif("launch", str(config), "--address", address, "train.colocate=true",
                       "train.rollout_resources={}", "train.rollout_cpus=2")
    assert colocated.returncode != 0
    assert "error: train.colocate puts the learners and rollout workers on one node" in colocated.stderr
    assert len(_jobs(address)) == before, "a refused layout must not reach the cluster"


def test_bad_submissions_fail_early_with_one_line(cluster, tiny_model, tmp_path):
    _, address = cluster
    before = len(_jobs(address))
    config = _config(tmp_path, tiny_model)
    port = _free_port()
    cases = {
        ("launch", str(config), "--address", f"http://127.0.0.1:{port}"):
            f"error: no Ray dashboard answers at http://127.0.0.1:{port}",
        ("launch", str(config), "--address", address, "learner.lr=-1"): "error: config key 'learner.lr'",
        ("launch", str(config), "--address", address, "launch.env_vars=[RLAIF_TEST_UNSET_VAR]"):
            "error: launch.env_vars names RLAIF_TEST_UNSET_VAR, not set in this shell",
        ("launch", str(config), "--address", "http://10.0.0.1:8265", "run.root=runs"):
            "error: run.root 'runs' is relative",
        ("launch", "status", "rlaif-no-such-job", "--address", address): "error: no job 'rlaif-no-such-job'",
    }
    for args, expected in cases.items():
        done = _rlaif(*args)
        assert done.returncode != 0, args
        lines = done.stderr.strip().splitlines()
        assert lines and lines[-1].startswith(expected), (args, done.stderr[-2000:])
    assert len(_jobs(address)) == before


def test_a_sandbox_node_without_a_docker_engine_fails_the_job_early(cluster, tiny_model, tmp_path):
    c, address = cluster
    broken = c.add_node(num_cpus=1, resources={"sandbox": 1}, env_vars={"DOCKER_HOST": "unix:///nonexistent.sock"})
    try:
        config = _config(tmp_path, tiny_model, reward_workers=1)
        done = _rlaif("launch", str(config), "--address", address, "sandbox.backend=docker", "--follow", timeout=300)
        assert done.returncode == 1
        assert f"node 127.0.0.1 ({broken.node_id[:8]}) has the `sandbox` resource but cannot run docker " \
               "sandboxes: no Docker engine answers" in done.stdout
        assert "FAILED" in done.stderr
        assert not _alive_actors(address, "RolloutWorker") and not _alive_actors(address, "Learner")
    finally:
        c.remove_node(broken)
