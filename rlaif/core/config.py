"""One typed config tree, loaded from YAML and overridden on the command line as `a.b.c=value`.

Every field is documented by the docstring under it (pydantic keeps these as the field's
description, so `rlaif config show --doc` can print them). Unknown keys, wrong types and missing
required values raise `ConfigError`, whose one-line message names the key and, for a typo, the
closest valid key.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails
from typing_extensions import Self

from rlaif.errors import RlaifError


class ConfigError(RlaifError):
    """A config file or override is invalid; the message names the key and the fix."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors; docstrings become descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class RunConfig(Section):
    name: str = "run"
    """Name of the run; the run directory is `<root>/<name>`."""
    root: str = "runs"
    """Folder that holds run directories."""
    seed: int = 0
    """Seed for task sampling, model initialisation and everything else random."""


class ModelConfig(Section):
    path: str
    """Hugging Face model directory of the student (e.g. one built by `rlaif model tiny --out DIR`)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype for the learner and the engines; float32 on the CPU."""


class EnvConfig(Section):
    name: str = "pyfunc"
    """Environment: a registered name (`rlaif env list`) or a `module:Class` path."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments the environment takes (e.g. a data path); checked by the environment."""


class SandboxConfig(Section):
    backend: Literal["docker", "local"] = "docker"
    """Where commands run: `docker` (containers) or `local` (bubblewrap, for machines without Docker)."""
    image: str = "rlaif/base:latest"
    """Image sandboxes start from unless the environment or the task names its own (docker backend): it replaces
    `rlaif/base:latest`, the image of environments that name none. Nothing is pulled: it must be in the engine."""
    memory_mb: int = Field(default=512, ge=16)
    """Memory limit per sandbox, MiB (no swap). Exceeding it ends the command with status `oom`."""
    cpus: float = Field(default=1.0, gt=0)
    """CPU limit per sandbox, in cores."""
    pids: int = Field(default=128, ge=8)
    """Maximum number of processes per sandbox (a fork bomb hits this, then its timeout)."""
    timeout_s: float = Field(default=30.0, gt=0)
    """Default time limit of one command, seconds; the whole process tree is killed at the limit."""
    max_output_bytes: int = Field(default=1 << 20, ge=1024)
    """Cap on one command's stdout + stderr; past it the command is stopped (`output_truncated`)."""
    work_mb: int = Field(default=256, ge=1)
    """Size of the writable work directory `/work`, MiB."""
    tmp_mb: int = Field(default=64, ge=1)
    """Size of `/tmp`, MiB."""
    lifetime_s: float = Field(default=3600.0, gt=0)
    """Wall-clock lifetime of a sandbox; it ends itself after this, whatever the host does."""
    env_passthrough: list[str] = Field(default_factory=list)
    """Host environment variables passed to commands, by name. Nothing else of the host's environment
    (API keys included) reaches a sandbox."""
    pool_size: int = Field(default=4, ge=0)
    """Sandboxes kept started ahead of demand, per image."""
    infra_retries: int = Field(default=2, ge=0)
    """Times a one-shot command is retried on a fresh sandbox after an infrastructure failure."""
    reuse: bool = False
    """Hand a sandbox to another trajectory after use. Off: every trajectory gets a fresh one."""


class RolloutConfig(Section):
    group_size: int = Field(default=8, ge=2)
    """Samples per task; one GRPO group. At least 2: an advantage is an answer's reward against its group's."""
    temperature: float = Field(default=1.0, ge=0)
    """Sampling temperature."""
    max_tokens: int = Field(default=256, ge=1)
    """Maximum completion tokens per model turn."""
    max_turns: int | None = Field(default=None, ge=1)
    """Maximum model turns per episode; None: the environment's own (`Environment.max_turns`), as `rlaif eval` uses."""


class LearnerConfig(Section):
    lr: float = Field(default=1e-5, gt=0)
    """Learning rate (AdamW, constant after `warmup_steps`)."""
    warmup_steps: int = Field(default=0, ge=0)
    """Steps of linear learning-rate warm-up from 0."""
    loss: Literal["grpo", "dr_grpo", "dapo", "gspo"] = "grpo"
    """Policy loss (see the README for the matching TRL `loss_type`)."""
    steps: int = Field(default=10, ge=1)
    """Optimizer steps in the run."""
    batch_tasks: int = Field(default=4, ge=1)
    """Tasks (groups) per step: one step trains on batch_tasks x rollout.group_size episodes."""
    eps_low: float = Field(default=0.2, ge=0)
    """Lower clip of the ratio (1 - eps_low)."""
    eps_high: float | None = Field(default=None, ge=0)
    """Upper clip (1 + eps_high); None: eps_low. DAPO's clip-higher uses 0.28."""
    beta: float = Field(default=0.0, ge=0)
    """KL coefficient to the frozen initial model (k3 estimator); 0 loads no reference model."""
    tis_cap: float | None = Field(default=2.0, gt=0)
    """Truncated importance sampling between vLLM's behaviour logprobs and the learner's (cap on the
    per-token weight); None turns the correction off."""
    scale_rewards: bool | None = None
    """Divide advantages by the group's reward std (GRPO); False: only centre them (Dr. GRPO). None: from the loss,
    False for `dr_grpo` (whose point is unscaled advantages) and True for the others; True with `dr_grpo` is refused."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping."""
    micro_batch: int = Field(default=8, ge=1)
    """Turns per forward/backward pass; gradients accumulate over the step."""
    epochs: int = Field(default=1, ge=1)
    """Passes over each batch (PPO-style reuse; TRL `num_iterations`). With more than one optimizer update per
    batch, every update's ratio is taken against the policy before the first (the clip acts)."""
    mini_batches: int = Field(default=1, ge=1)
    """Optimizer updates per pass over the batch: it is split into this many shuffled parts (TRL:
    `steps_per_generation` = this x `gradient_accumulation_steps`)."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    mask_truncated: bool = False
    """Leave episodes cut off by the token or turn limit out of the loss (their group still counts them for
    its advantages)."""
    dynamic_sampling: bool = True
    """Drop groups whose rewards are all equal (no signal) and refill the batch with new tasks (DAPO)."""
    skip_no_signal_epochs: int = Field(default=0, ge=0)
    """A task whose group had no signal (every reward equal: solved, or failed by every sample) is passed over for
    this many of the next epochs of the task stream, so generation goes to tasks that can teach (as GRESO). It comes
    back after them: a policy that moved may have made it teachable. 0: every task, every epoch."""
    max_fill_rounds: int = Field(default=4, ge=1)
    """With dynamic sampling: at most batch_tasks x this many groups are tried for one step; a step that
    still lacks groups trains on what it has. A draw with nothing to train on is not a step: it is counted
    (`dropped/empty_draw`) and drawn again, and this many of them in a row stop the run with an error."""
    lora_rank: int = Field(default=0, ge=0)
    """LoRA rank through `peft` (0: full fine-tuning)."""
    lora_alpha: float = Field(default=32.0, gt=0)
    """LoRA alpha."""

    @model_validator(mode="after")
    def _scaling_fits_the_loss(self) -> Self:
        if self.loss == "dr_grpo" and self.scale_rewards:
            raise ValueError("learner.scale_rewards: true contradicts loss dr_grpo, which only centres advantages "
                             "(Dr. GRPO); drop scale_rewards or choose another loss")
        return self

    @property
    def scales_rewards(self) -> bool:
        """Whether advantages are divided by the group's std: `scale_rewards`, or what the loss implies."""
        return self.loss != "dr_grpo" if self.scale_rewards is None else self.scale_rewards


class TrainConfig(Section):
    mode: Literal["sync", "async"] = "sync"
    """`sync`: generate a batch, then train on it; `async`: keep generating while the learner trains."""
    max_staleness: int = Field(default=1, ge=0)
    """In async mode: a sample trains at most this many weight versions after the one that generated it
    (0 = on-policy). Generation is held back so this holds; a group that still exceeds it is dropped."""
    sync_every: int = Field(default=1, ge=1)
    """Send new weights to the rollout workers every this many steps."""
    rollout_workers: int = Field(default=1, ge=1)
    """vLLM engines (Ray actors)."""
    rollout_cpus: float = Field(default=1.0, ge=0)
    """Ray CPUs per rollout worker."""
    rollout_gpus: float = Field(default=0.0, ge=0)
    """GPUs per rollout worker (0 on the CPU build)."""
    learners: int = Field(default=1, ge=1)
    """Data-parallel learner processes: each holds the whole model and trains on a share of every batch;
    gradients are summed with torch distributed (gloo on the CPU, NCCL on GPUs). Weights are not sharded."""
    learner_cpus: float = Field(default=1.0, ge=0)
    """Ray CPUs per learner."""
    learner_gpus: float = Field(default=0.0, ge=0)
    """GPUs per learner."""
    reward_workers: int = Field(default=1, ge=1)
    """Reward service actors (CPU): they run the unit tests in sandboxes on their node, and the judges' calls."""
    reward_cpus: float = Field(default=0.5, ge=0)
    """Ray CPUs per reward worker."""
    colocate: bool = False
    """Put the rollout engines on the learners' node, in one placement group (STRICT_PACK), e.g. to share a GPU
    through fractional `*_gpus`. False: learners are packed together and engines spread over the nodes, so a
    lost node takes as few engines as possible."""
    learner_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each learner needs besides CPUs and GPUs, e.g. `{learner: 1}` to pin learners to
    nodes started with `ray start --resources='{"learner": 1}'`."""
    rollout_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each rollout worker needs, e.g. `{sandbox: 1}` when its tools run in Docker
    sandboxes on its node."""
    reward_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each reward worker needs, e.g. `{sandbox: 1}`: nodes with the `sandbox` resource
    must have a Docker engine (checked when the run starts)."""
    worker_restart_timeout_s: float = Field(default=600.0, gt=0)
    """How long the run waits for a rollout worker lost with its node to come back (Ray restarts it where the
    resources allow) when no other worker is left; past it the run ends with a checkpoint to resume from."""
    episode_concurrency: int = Field(default=64, ge=1)
    """Episodes in flight at once, over all rollout workers."""
    gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1)
    """Share of a GPU's memory a vLLM engine may take. On the CPU build the KV cache is a fixed 1 GiB instead
    (`rlaif.policies.engine.CPU_KV_CACHE_BYTES`; VLLM_CPU_KVCACHE_SPACE=GIB overrides it)."""
    bucket_mb: float = Field(default=64.0, gt=0)
    """Weight sync bucket size."""
    weight_transport: Literal["auto", "object_store", "broadcast"] = "auto"
    """How weights reach the engines: `object_store` (host buckets through Ray; works everywhere), `broadcast`
    (a process group from the learner to every engine: NCCL device-to-device on GPUs, gloo on the CPU), or
    `auto`: broadcast when learners and rollout workers each hold whole GPUs, the object store otherwise
    (NCCL cannot broadcast between two ranks on one GPU)."""
    weight_sync_timeout_s: float = Field(default=60.0, gt=0)
    """Broadcast path: the longest the learner or an engine waits on one bucket. A rank that dies or hangs
    mid-broadcast aborts the group within it; that sync then goes by the object store, and the group is rebuilt
    once every engine is back."""
    probe_every: int = Field(default=1, ge=0)
    """Every this many weight syncs, check that each engine's logprobs on a fixed probe text equal the learner's
    (`WeightSyncError` otherwise): the sync's digest proves the bytes arrived, the probe that the engine's loader
    put them where they belong (fused q/k/v order, layers). 0: never."""
    probe_tolerance: float | None = Field(default=None, gt=0)
    """Largest difference of a probe token's logprob allowed between engine and learner; None: 0.02 for float32
    models, 0.2 for bfloat16 (the learner computes in bf16 under autocast, the engine in its own kernels)."""
    heldout_every: int = Field(default=0, ge=0)
    """Every this many steps (and at the last), score the current weights on held-out tasks: the learning curve's
    held-out side, logged as `heldout/pass@1` (mean over tasks of the share of samples with reward 1, as `rlaif eval`
    counts) and `heldout/reward`. Graded by the run's own reward, judges included (they are billed). 0: never."""
    heldout_tasks: int = Field(default=32, ge=1)
    """The probe's tasks: the first this many of the environment's test split."""
    heldout_samples: int = Field(default=2, ge=1)
    """Samples per held-out task."""
    heldout_temperature: float | None = Field(default=None, gt=0)
    """The probe's sampling temperature, to match the evaluation it stands for; None: the rollout's."""
    checkpoint_every: int = Field(default=10, ge=0)
    """Checkpoint every this many steps (and at the end); 0: only at the end."""
    keep_checkpoints: int = Field(default=2, ge=1)
    """Checkpoints kept; older ones are deleted once a newer one is complete."""
    ray_address: str | None = None
    """Join this Ray cluster (`auto` or host:port); None: start Ray on this machine, on 127.0.0.1."""
    wandb_project: str | None = None
    """Also log metrics to this W&B project."""


class JudgeConfig(Section):
    name: str = "default"
    """How graders refer to this judge (an environment's `judge` argument)."""
    endpoint: str = "anthropic:claude-sonnet-4-5"
    """`anthropic:MODEL` (key from ANTHROPIC_API_KEY, endpoint from ANTHROPIC_BASE_URL or the SDK default) or
    `openai:BASE_URL:MODEL` (any OpenAI-compatible server; key from OPENAI_API_KEY, or "EMPTY")."""
    mode: Literal["pointwise", "reference", "group"] = "pointwise"
    """`pointwise`: the rubric, answer by answer; `reference`: compared with the reference answer;
    `group`: all answers of a GRPO group in one call, order shuffled per call, one score each."""
    samples: int = Field(default=1, ge=1)
    """Verdicts per answer, averaged (each a separate call)."""
    temperature: float = Field(default=0.0, ge=0)
    """Judge sampling temperature (sent only where the API takes it)."""
    max_tokens: int = Field(default=1024, ge=16)
    """Maximum tokens of one verdict."""
    weight: float = Field(default=1.0, ge=0)
    """Weight of the judge component in a task's reward."""
    concurrency: int = Field(default=16, ge=1)
    """Judge calls in flight at once, across the run's reward workers."""
    rpm: float | None = Field(default=None, gt=0)
    """Requests per minute allowed, across the run's reward workers (None: unlimited)."""
    tpm: float | None = Field(default=None, gt=0)
    """Tokens per minute allowed, across the run's reward workers (None: unlimited)."""
    retries: int = Field(default=4, ge=0)
    """Retries after a 429, a 5xx, a timeout or an unparseable verdict; then the verdict is infra_error."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Time limit of one judge call."""
    backoff_s: float = Field(default=0.5, ge=0)
    """First retry delay, doubled per attempt with full jitter, capped at 30 s; never less than `retry-after`."""
    input_usd_per_mtok: float = Field(default=0.0, ge=0)
    """Price of a million input tokens, for cost accounting."""
    output_usd_per_mtok: float = Field(default=0.0, ge=0)
    """Price of a million output tokens."""
    budget_usd: float | None = Field(default=None, gt=0)
    """Spend limit of the whole run, all reward workers together, never overrun (`rlaif_rewards.ledger`); reaching it
    checkpoints the run and ends it with one line (raise it and `rlaif train --resume`)."""
    cache: str | None = "runs/judge-cache.sqlite"
    """SQLite file of cached verdicts, shared across runs (None: in memory only)."""
    rubric: str | None = None
    """A YAML/JSON rubric file for `rlaif judge score`; environments' graders bring their tasks' own rubrics."""
    extra_body: dict[str, Any] | None = None
    """Server-specific request fields for `openai:` judges, e.g. vLLM's
    `{"structured_outputs": {"json": SCHEMA}}` to force parseable verdicts from a local model."""
    structured: bool = False
    """Send each call its verdict's JSON schema (`rlaif_rewards.schemas`: the rubric's criteria, or the group's
    answer ids, each once) as OpenAI's `response_format`, which vLLM enforces, so that every verdict parses.
    `openai:` judges only; for a small local model. Serve it with `--structured-outputs-config
    '{"backend": "xgrammar", "disable_any_whitespace": true}'`, or a weak model may pad a verdict with blanks."""

    @model_validator(mode="after")
    def _structured_needs_openai(self) -> Self:
        if self.structured and not self.endpoint.startswith("openai:"):
            raise ValueError(f"judge {self.name!r}: structured: true needs an openai: endpoint (a server that "
                             "enforces response_format, such as vLLM); remove it for an anthropic: judge")
        return self


class ComponentConfig(Section):
    kind: Literal["judge", "format", "length"]
    """`judge` (a rubric judge on the final answer), `format` (answer matches `pattern`), `length` (penalty
    past `max_chars`)."""
    name: str | None = None
    """Component name on the trajectory (default: the kind)."""
    weight: float = Field(default=1.0, ge=0)
    """Weight in the task's reward (a weighted mean over all components)."""
    judge: str = "default"
    """For `judge`: which of reward.judges."""
    pattern: str | None = None
    """For `format`: a regular expression the final answer must match."""
    max_chars: int = Field(default=4000, ge=1)
    """For `length`: characters allowed before the penalty starts."""
    gate: str | None = None
    """Run only when this other component scored at least `gate_threshold`; else score 0 (e.g. `tests`)."""
    gate_threshold: float = 1.0


class RewardConfig(Section):
    judges: list[JudgeConfig] = Field(default_factory=list)
    """Judges by name; graders that need one look it up here."""
    components: list[ComponentConfig] = Field(default_factory=list)
    """Components added to every task's reward, besides the environment's own graders."""


class LaunchConfig(Section):
    working_dir: str | None = None
    """A local folder uploaded with the job for `rlaif launch` (plugin code, data files); the job runs in it."""
    excludes: list[str] = Field(default_factory=list)
    """gitignore-style patterns left out of `working_dir` (Ray's own limit on an upload is 500 MiB)."""
    env_vars: list[str] = Field(default_factory=list)
    """Names of environment variables copied from the submitting shell into the job (e.g. ANTHROPIC_API_KEY).
    Names only: a value never belongs in a config file. Ray shows a job's environment to whoever can read
    its dashboard; on a shared cluster, give secrets to the nodes instead (a Kubernetes Secret)."""
    pip: list[str] = Field(default_factory=list)
    """Extra pip requirements Ray installs for the job (e.g. an environment plugin's package)."""


class Config(Section):
    """The whole rlaif config."""

    model: ModelConfig
    """The student model."""
    run: RunConfig = Field(default_factory=RunConfig)
    """Run naming and seeding."""
    env: EnvConfig = Field(default_factory=EnvConfig)
    """The environment tasks come from."""
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    """Sandboxes for tools and unit tests."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """Generation."""
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """Optimisation."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Orchestration: sync or async, resources, weight sync, checkpoints."""
    reward: RewardConfig = Field(default_factory=RewardConfig)
    """Judges and reward composition."""
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    """What `rlaif launch` sends with the job to a Ray cluster."""


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML file (or nothing), apply `a.b.c=value` overrides, validate. Raises ConfigError."""
    data = _read_data(path, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_explain(err.errors())) from None


def load_reward_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RewardConfig:
    """The `reward` section alone, for commands that need judges but no student (`rlaif judge ...`).

    The whole file is checked as `load_config` checks it (a typo in any section is still an error), except
    that `model` and `model.path` may be absent: a judges-only file is a complete config here. Raises ConfigError.
    """
    data = _read_data(path, overrides)
    try:
        return Config.model_validate(data).reward
    except ValidationError as err:
        no_student = (("model",), ("model", "path"))
        errors = [e for e in err.errors() if not (e["type"] == "missing" and e["loc"] in no_student)]
        if errors:
            raise ConfigError(_explain(errors)) from None
    return RewardConfig.model_validate(data.get("reward", {}))  # valid: its errors would have been in `errors`


def _read_data(path: str | Path | None, overrides: Sequence[str]) -> dict[str, Any]:
    """The YAML file's mapping (empty without a file) with the overrides applied, not yet validated."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for item in overrides:
        _apply_override(data, item)
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix the syntax there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not a {type(data).__name__}")
    return data


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} is not of the form a.b.c=value")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    *parents, leaf = key.split(".")
    node: Any = data
    for i, part in enumerate(parents):
        child = (node[_list_index(node, part, item, ".".join(parents[:i]))] if isinstance(node, list)
                 else node.setdefault(part, {}))
        if not isinstance(child, dict | list):
            raise ConfigError(f"override {item!r}: {'.'.join(parents[: i + 1])} is a value, not a section")
        node = child
    node[_list_index(node, leaf, item, ".".join(parents)) if isinstance(node, list) else leaf] = value


def _list_index(items: list[Any], part: str, item: str, where: str) -> int:
    """The item of a config list an override names: by position (`reward.judges.0`) or by its `name`
    (`reward.judges.default`)."""
    if part.isdigit() and int(part) < len(items):
        return int(part)
    named = [i for i, x in enumerate(items) if isinstance(x, dict) and x.get("name", "default") == part]
    if len(named) == 1 and not part.isdigit():
        return named[0]
    names = [str(x.get("name", "default")) for x in items if isinstance(x, dict)]
    raise ConfigError(f"override {item!r}: {where} has {len(items)} item(s) ({', '.join(names) or 'unnamed'}); "
                      f"name one by position 0..{len(items) - 1} or by name")


def _explain(errors: list[ErrorDetails]) -> str:
    """Turn pydantic's errors into one line: every unknown key, then the first other problem.

    Unknown keys come first because a misspelt key is usually why a value is missing or left at its
    default (`modle: {path: m}` is also a missing `model.path`), so the typo is the fix to name. A lone
    unknown key keeps the short form `unknown config key 'k'; did you mean 'j'?`.
    """
    unknown = [_unknown_key([str(p) for p in e["loc"]]) for e in errors if e["type"] == "extra_forbidden"]
    others = [e for e in errors if e["type"] != "extra_forbidden"]
    if not unknown:
        return _problem(others[0])
    if len(unknown) == 1 and not others:
        key, hint = unknown[0]
        return f"unknown config key {key!r}; {hint}"
    named = ", ".join(f"{key!r} ({hint})" for key, hint in unknown)
    message = f"unknown config key{'s' if len(unknown) > 1 else ''} {named}"
    return f"{message}; also {_problem(others[0])}" if others else message


def _unknown_key(loc: list[str]) -> tuple[str, str]:
    """The dotted unknown key and a hint: the closest valid key, else the valid keys of its section."""
    valid = _valid_keys(loc[:-1])
    typo = loc[-1]
    # A key the typo extends with a suffix (`lr_rate` -> `lr`) beats a merely similar one (`lora_rank`).
    close = [k for k in valid if typo.startswith(k + "_")] or difflib.get_close_matches(
        typo, valid, n=1, cutoff=0.5) or [k for k in valid if typo.startswith(k) or k.startswith(typo)]
    hint = f"did you mean {'.'.join([*loc[:-1], close[0]])!r}?" if close else f"valid keys: {', '.join(valid)}"
    return ".".join(loc), hint


def _problem(error: ErrorDetails) -> str:
    """One pydantic error other than an unknown key (a missing value, a wrong type), as a phrase."""
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc)
    if error["type"] == "missing":
        section = _section(loc)
        if section is not None:
            key += "." + next(n for n, f in section.model_fields.items() if f.is_required())
        return f"missing required config value {key!r}; set it in the file or pass {key}=..."
    if error["type"] == "value_error":  # a check across keys: its message names them and the fix
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
        return reason if reason.startswith(key) else f"config key {key!r}: {reason}"
    return f"config key {key!r}: {error['msg']} (got {error.get('input')!r})"


def _section(loc: list[str]) -> type[BaseModel] | None:
    """The config section at a dotted location (an item of a list of sections too: `reward.judges.0`), or None when
    it is a value (or not a key)."""
    node: Any = Config
    for part in loc:
        if _is_section(node):
            field = node.model_fields.get(part)
            node = field.annotation if field else None
        elif get_origin(node) is list and part.isdigit():
            node = get_args(node)[0]
        else:
            return None
    return node if _is_section(node) else None


def _is_section(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)


def _valid_keys(loc: list[str]) -> list[str]:
    section = _section(loc)
    return list(section.model_fields) if section else []


def dump_config(config: Config) -> str:
    """The resolved config as YAML, in declaration order."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
