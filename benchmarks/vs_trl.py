"""rlaif's GRPO trainer against TRL's `GRPOTrainer` (vLLM colocated), on the same work: samples trained per second.

Two reward cases, each run by both trainers:
- `a_unit_tests`: the `pyfunc` environment's unit tests, run in fresh Docker sandboxes by rlaif's `Rewarder`.
  TRL calls it as an async reward function (TRL runs those on its own event loop thread and awaits a batch's
  rewards together), which builds each Submission as the environment does and grades a batch concurrently.
- `b_judge_500ms`: a judge endpoint that answers after 500 ms (`tests.support.fault_server`, served by this
  process, outside both trainers), through `rlaif_rewards.judge.Judge`; rlaif's side grades with the judge
  alone (the environment's unit tests are left out), TRL's side calls `judge.score` for a batch concurrently
  with the same question, answer and reference rlaif's judge grader sends. The judge's score is a hash of the
  request (0, 0.25, ..., 1), so groups have spread and the loss is not all-zero advantages.

Fairness: the same model (models/tiny, float32), tasks (`pyfunc` train split, the same chat messages), group size 8,
4 tasks per optimizer step (32 completions), 64 completion tokens, temperature 1.0, lr 1e-5 constant, AdamW,
grad-norm clip 1.0, GRPO loss with beta 0 and clip 0.2, rewards scaled by the group std, the vLLM/learner mismatch
corrected by token-level truncated importance sampling capped at 2 (TRL `token_truncate`, rlaif `tis_cap`),
micro-batches of 8 completions, the same sandbox settings and judge config, and vLLM given the same memory share.
TRL: `per_device_train_batch_size=8`, `gradient_accumulation_steps=4`, so `steps_per_generation=4` and one
generation batch of 32 (one vLLM call) feeds exactly one optimizer step (`num_iterations=1`); gradient
checkpointing and bf16 (TRL's defaults) are off, as rlaif's learner has neither. rlaif runs in `sync` mode with
dynamic sampling off (TRL does not refill groups without signal), once in `sync` mode and once in `async`
mode with `max_staleness=1` (generation and grading of step k+1 overlap training step k; the importance-sampling
correction covers the one-version lag), and with `max_staleness=2` (`async2`: two batches in flight). `ratio` is
the `max_staleness=1` one (what the learning tests check); `ratio_sync` and `ratio_async2` are also reported.

Timing: each side runs `--steps` timed steps after 1 warm-up step (engine start, sandbox pool warm-up, first
compile paths), each in its own fresh process, one after the other (never two heavy processes at once).
TRL's figures cover the timed steps only: from the end of the warm-up step to the end of the last step.
Its phases come from wrapping TRL's own methods: `generate` (vLLM's `generate` call), `sync` (weights into
vLLM), `reward` (`_calculate_rewards`: the reward function and TRL's event-loop hand-off), `train` (the rest
of the step: tokenising prompts, TRL's logprob recomputation for importance sampling, advantages,
forward/backward, optimizer step, logging). rlaif's figures are what `rlaif.train.trainer.train` reports
(its summary excludes the warm-up step; `learner.steps` is steps + 1; its one checkpoint, at the last step, is
inside its wall time, while TRL saves none).
A reward of None (`infra_error`) is never 0: TRL leaves that completion out of its group's baseline and gives it
no advantage; this script counts them (`trl_reward_infra_errors`).

Prints one JSON object; a side that fails gives `<side>_error` and no ratio. Child output goes to stderr.
After each side, sandbox containers it created and left behind (their owner process gone) are removed and
processes left in its session are killed; both are counted (`<side>_leftover_containers`, `..._processes`).

Usage: python benchmarks/vs_trl.py [--steps 8] [--only rlaif|trl] [--cases a_unit_tests,b_judge_500ms]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif.policies.vllm_cpu import ENV as VLLM_CPU_GEMM
from rlaif_environments.pyfunc.env import PyFunc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fault server lives in tests/support
from machine import cpu  # benchmarks/machine.py, beside this script

from tests.support.fault_server import JudgeEndpoint, Reply

if TYPE_CHECKING:
    from rlaif.core.config import Config, JudgeConfig
    from rlaif.env import Grader

ROOT = Path(__file__).resolve().parents[1]
CASES = ("a_unit_tests", "b_judge_500ms")
SIDES = ("rlaif_sync", "rlaif_async", "rlaif_async2", "trl")  # rlaif sync, async with max_staleness 1 and 2
WARMUP_STEPS = 1
JUDGE_LATENCY_S = 0.5
JUDGE_ONLY_ENV = "vs_trl:JudgeOnlyPyFunc"  # importable by rlaif's Ray workers: PYTHONPATH gets benchmarks/

PARAMS: dict[str, Any] = {
    "model": str(ROOT / "models" / "tiny"),
    "env": "pyfunc",
    "group_size": 8,
    "tasks_per_step": 4,
    "max_completion_tokens": 64,
    "temperature": 1.0,
    "lr": 1e-5,
    "loss": "grpo",
    "beta": 0.0,
    "clip_eps": 0.2,
    "tis_cap": 2.0,
    "max_grad_norm": 1.0,
    "micro_batch": 8,
    "gpu_memory_utilization": 0.1,
    "sandbox": {"backend": "docker", "pool_size": 4, "reuse": False},
    "judge_latency_s": JUDGE_LATENCY_S,
    "judge_concurrency": 64,
    "seed": 0,
    "vllm_cpu_gemm": "torch",
}


class JudgeOnlyPyFunc(PyFunc):
    """`pyfunc` with no graders of its own: case (b) on rlaif's side is graded by the configured judge alone."""

    def graders(self, task) -> list[Grader]:
        return []


def judge_script(record: dict) -> Reply:
    """A verdict whose score (0, 0.25, ..., 1) is a hash of the request: the same answer gets the same score."""
    score = zlib.crc32(json.dumps(record["body"], sort_keys=True).encode()) % 5 / 4
    return Reply(text=json.dumps({"score": score, "reason": "scripted"}), delay_s=JUDGE_LATENCY_S)


def judge_config(params: dict) -> JudgeConfig:
    from rlaif.core.config import JudgeConfig

    return JudgeConfig(endpoint=f"openai:{params['judge_url']}/v1:bench-judge", concurrency=params["judge_concurrency"],
                       cache=None)


def rlaif_config(case: str, params: dict) -> Config:
    """The rlaif config both sides grade with (and rlaif's side trains with)."""
    from rlaif.core.config import Config

    steps = params["steps"] + WARMUP_STEPS
    data: dict[str, Any] = {
        "model": {"path": params["model"], "dtype": "float32"},
        "run": {"name": f"vs-trl-{case}", "seed": params["seed"]},
        "env": {"name": params["env"] if case == "a_unit_tests" else JUDGE_ONLY_ENV},
        "sandbox": params["sandbox"],
        "rollout": {"group_size": params["group_size"], "temperature": params["temperature"],
                    "max_tokens": params["max_completion_tokens"], "max_turns": 1},
        "learner": {"lr": params["lr"], "loss": params["loss"], "steps": steps, "batch_tasks": params["tasks_per_step"],
                    "beta": params["beta"], "eps_low": params["clip_eps"], "tis_cap": params["tis_cap"],
                    "max_grad_norm": params["max_grad_norm"], "micro_batch": params["micro_batch"],
                    "scale_rewards": True, "dynamic_sampling": False, "mask_truncated": False},
        "train": {"mode": params.get("rlaif_mode", "sync"), "max_staleness": params.get("max_staleness", 1),
                  "sync_every": 1,
                  "rollout_workers": 1, "checkpoint_every": 0,
                  "gpu_memory_utilization": params["gpu_memory_utilization"]},
    }
    if case == "b_judge_500ms":
        data["reward"] = {"judges": [judge_config(params).model_dump()], "components": [{"kind": "judge"}]}
    return Config.model_validate(data)


# ---- rlaif ----------------------------------------------------------------------------------------------------
def run_rlaif(case: str, params: dict) -> dict:
    """rlaif's trainer on one case; its summary's samples, wall time and phases (warm-up excluded)."""
    from rlaif.train.trainer import train

    config = rlaif_config(case, params)
    try:
        with tempfile.TemporaryDirectory(prefix="vs-trl-rlaif-") as tmp:
            summary = train(config, run_root=tmp)
    finally:
        import ray

        ray.shutdown()  # the trainer leaves Ray up for its caller
    if not summary["samples"]:
        raise RuntimeError(f"rlaif trained on no samples after the warm-up step (dropped: {summary.get('dropped')})")
    return {"samples": summary["samples"], "wall_s": round(summary["wall_s"], 2),
            "samples_per_s": round(summary["samples_per_s"], 3),
            "phases_s": {k: round(v, 2) for k, v in summary["phases_s"].items()},
            "dropped": summary.get("dropped", {})}


# ---- TRL ------------------------------------------------------------------------------------------------------
class TrlReward:
    """TRL's reward function for one case, computed by rlaif's own code on TRL's reward event loop.

    TRL awaits it on a daemon loop thread; the Rewarder's sandbox pools and the judge's client belong to that
    loop, so they start on the first call and must be closed there too (`close_on`).
    """

    def __init__(self, case: str, params: dict, run_id: str) -> None:
        from rlaif.registry import load_environment

        self.case, self.params, self.run_id = case, params, run_id
        self.env = load_environment(params["env"], {})
        self.tasks = {t.id: t for t in self.env.tasks("train")}
        self.grader: Any = None
        self.infra_errors = 0
        self.graded: list[float] = []
        self.__name__ = case  # TRL names a reward function by its __name__

    async def _start(self) -> None:
        if self.case == "a_unit_tests":
            from rlaif_rewards.service import Rewarder

            self.grader = Rewarder(rlaif_config(self.case, self.params), run_id=self.run_id)
            await self.grader.start()
        else:
            from rlaif_rewards.judge import Judge

            self.grader = Judge(judge_config(self.params))

    async def _grade(self, task_id: str, completion: Any) -> Any:
        from rlaif.types import Message

        task = self.tasks[task_id]
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        if self.case == "b_judge_500ms":
            return await self.grader.score(task, text, None, task.reference)  # what rlaif's judge grader sends
        messages = [*self.env.prompt(task), Message(role="assistant", content=text or "")]
        return await self.grader.grade(task, await self.env.submission(task, messages, None))

    async def __call__(self, prompts: list, completions: list, task_id: list[str], **_: Any) -> list[float | None]:
        if self.grader is None:
            await self._start()
        results = await asyncio.gather(*(self._grade(t, c) for t, c in zip(task_id, completions, strict=True)))
        rewards: list[float | None] = []
        for result in results:
            if result.status == "infra_error" or result.total is None:
                self.infra_errors += 1
                rewards.append(None)
            else:
                self.graded.append(result.total)
                rewards.append(result.total)
        return rewards

    async def close(self) -> None:
        if self.grader is not None:
            await self.grader.close()
            self.grader = None


def timed(method: Any, totals: dict[str, float], phase: str) -> Any:
    """`method`, adding its wall time to `totals[phase]`."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            totals[phase] += time.perf_counter() - start
    return wrapper


def run_trl(case: str, params: dict) -> dict:
    """TRL's GRPOTrainer on one case: samples per second and phases over the timed steps."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    reward = TrlReward(case, params, run_id=f"vs-trl-{case}-{os.getpid()}")
    rows = [{"prompt": [m.model_dump(include={"role", "content"}) for m in reward.env.prompt(t)], "task_id": t.id}
            for t in reward.tasks.values()]
    per_step = params["group_size"] * params["tasks_per_step"]
    totals = {"generate": 0.0, "sync": 0.0, "reward": 0.0, "samples": 0.0}
    marks: dict[str, tuple[float, dict[str, float]]] = {}

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            mark = (time.perf_counter(), dict(totals))
            if state.global_step == WARMUP_STEPS:
                marks["start"] = mark
            marks["end"] = mark

    with tempfile.TemporaryDirectory(prefix="vs-trl-trl-") as tmp:
        args = GRPOConfig(
            output_dir=tmp, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
            seed=params["seed"], max_steps=params["steps"] + WARMUP_STEPS,
            learning_rate=params["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            max_grad_norm=params["max_grad_norm"], bf16=False, gradient_checkpointing=False,
            model_init_kwargs={"dtype": "float32"},
            per_device_train_batch_size=params["micro_batch"],
            gradient_accumulation_steps=per_step // params["micro_batch"],
            num_generations=params["group_size"], num_iterations=1,
            max_completion_length=params["max_completion_tokens"], temperature=params["temperature"],
            loss_type=params["loss"], beta=params["beta"], epsilon=params["clip_eps"], scale_rewards="group",
            mask_truncated_completions=False,
            use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=params["gpu_memory_utilization"],
            vllm_importance_sampling_correction=True, vllm_importance_sampling_mode="token_truncate",
            vllm_importance_sampling_clip_max=params["tis_cap"],
        )
        trainer = GRPOTrainer(model=params["model"], reward_funcs=[reward], args=args,
                              train_dataset=Dataset.from_list(rows), callbacks=[StepClock()])
        vllm = trainer.vllm_generation
        vllm.generate = timed(vllm.generate, totals, "generate")
        vllm.sync_weights = timed(vllm.sync_weights, totals, "sync")
        calculate = timed(trainer._calculate_rewards, totals, "reward")

        def calculate_rewards(inputs, prompts, *rest):
            totals["samples"] += len(prompts)
            return calculate(inputs, prompts, *rest)

        trainer._calculate_rewards = calculate_rewards
        try:
            trainer.train()
        finally:
            asyncio.run_coroutine_threadsafe(reward.close(), trainer.async_loop).result(timeout=120)
    (t0, start), (t1, end) = marks["start"], marks["end"]
    wall = t1 - t0
    phases = {k: end[k] - start[k] for k in ("generate", "sync", "reward")}
    phases["train"] = wall - sum(phases.values())
    samples = int(end["samples"] - start["samples"])
    assert samples == params["steps"] * per_step, (samples, params["steps"], per_step)
    return {"samples": samples, "wall_s": round(wall, 2), "samples_per_s": round(samples / wall, 3),
            "phases_s": {k: round(v, 2) for k, v in phases.items()},
            "reward_infra_errors": reward.infra_errors,
            "reward_mean": round(sum(reward.graded) / len(reward.graded), 4) if reward.graded else None,
            "settings": {"per_device_train_batch_size": args.per_device_train_batch_size,
                         "gradient_accumulation_steps": args.gradient_accumulation_steps,
                         "steps_per_generation": args.steps_per_generation,
                         "generation_batch_size": args.generation_batch_size,
                         "num_iterations": args.num_iterations}}


# ---- orchestration --------------------------------------------------------------------------------------------
def rlaif_containers() -> dict[str, dict]:
    """Sandbox containers on this Docker engine: id -> labels."""
    from rlaif.sandbox.engine import sandbox_containers

    return {c.id: c.labels for c in sandbox_containers()}


def session_processes(session: int) -> list[int]:
    """Live processes of a session (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


def run_side(side: str, case: str, params: dict, timeout_s: float) -> dict:
    """One side on one case in a fresh process (output to stderr); afterwards, remove containers it left."""
    from rlaif.sandbox.engine import docker_client
    from rlaif.sandbox.gc import owner_alive

    before = rlaif_containers()
    with tempfile.TemporaryDirectory(prefix="vs-trl-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--case", case,
                   "--params", json.dumps(params), "--result", str(result_path)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                                                          os.environ.get("PYTHONPATH")])),
               VLLM_CPU_GEMM: params["vllm_cpu_gemm"]}
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=sys.stderr, stderr=sys.stderr, env=env, start_new_session=True)
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            lingering = session_processes(child.pid)  # its vLLM and Ray processes share its session
            for pid in lingering:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        process_s = time.perf_counter() - start
        if result_path.is_file():
            result = json.loads(result_path.read_text())
        else:
            result = {"error": f"exit code {child.returncode} after {process_s:.0f} s (see stderr)"}
    left = [cid for cid, labels in rlaif_containers().items()
            if cid not in before and not owner_alive(labels.get("rlaif.owner", ""))]
    for cid in left:
        docker_client().containers.get(cid).remove(force=True)
    result.update(process_s=round(process_s, 1), leftover_processes=len(lingering), leftover_containers=len(left))
    return result


def worker(side: str, case: str, params: dict, result_path: Path) -> None:
    try:
        if side == "trl":
            result = run_trl(case, params)
        else:
            mode = side.removeprefix("rlaif_")
            staleness = 2 if mode.endswith("2") else 1
            result = run_rlaif(case, {**params, "rlaif_mode": mode.rstrip("2"), "max_staleness": staleness})
    except Exception as err:  # reported in the JSON; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    result_path.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per side (plus 1 warm-up)")
    parser.add_argument("--only", choices=SIDES, help="run one side only")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to one side on one case")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.case, json.loads(args.params), args.result)
        return
    cases = [c for c in args.cases.split(",") if c]
    if unknown := set(cases) - set(CASES):
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    sides = [args.only] if args.only else list(SIDES)
    params = {**PARAMS, "steps": args.steps, "warmup_steps": WARMUP_STEPS}
    out: dict[str, Any] = {}
    with JudgeEndpoint(judge_script) as endpoint:
        for case in cases:
            figures: dict[str, Any] = {}
            for side in sides:
                result = run_side(side, case, {**params, "judge_url": endpoint.url}, args.timeout)
                if "settings" in result:
                    params["trl_settings"] = result.pop("settings")
                for key, value in result.items():
                    figures[f"{side}_{key}"] = value
            trl_rate = figures.get("trl_samples_per_s")
            for mode in ("sync", "async", "async2"):
                rate = figures.get(f"rlaif_{mode}_samples_per_s")
                figures[f"ratio_{mode}"] = round(rate / trl_rate, 3) if rate and trl_rate else None
            figures["ratio"] = figures["ratio_async"]
            out[case] = figures
    out["params"] = params
    out["cpu"] = cpu()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
