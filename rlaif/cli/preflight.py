"""Preflight: what `rlaif train`, `launch`, `sft`, `eval` and `collect` check in the driver before anything starts.

Hours into a cluster run is the worst moment to learn that a path was mistyped. Every check here is cheap, starts
nothing (no Ray, no engine, no container) and leaves nothing behind; the first that fails raises RlaifError, whose
one line names the problem and the fix. What passed comes back as lines (`rlaif train --check` prints them).

Placement is checked here only for the local Ray a run starts, whose resources this machine's are: finding a
cluster's nodes means joining it. A run that joins a cluster checks the layout against its nodes as soon as Ray is
up, before any actor starts (`rlaif.train.actors`); `rlaif launch` checks it through the dashboard before it submits
(`rlaif.cluster.jobs`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from rlaif.core.config import Config, EnvConfig, JudgeConfig, SandboxConfig, TrainConfig
from rlaif.env import Environment, ToolSpec
from rlaif.errors import RlaifError
from rlaif.types import Message, Task

CHECKPOINT_FACTOR = 3
"""A checkpoint holds the weights and the optimizer's two moments: about three times the weights files."""
SPLITS = ("train", "test")
SKIP_PLACEMENT = "skip placement: checked against the cluster's nodes once Ray is up, before any actor starts"
LOCAL_RAY = "this machine (the run starts a local Ray on it)"


def preflight(config: Config, *, run_dir: Path | None = None, here: bool = True, probe: bool = False,
              submitted: bool = False) -> list[str]:
    """Check a train config; one line per check passed (`ok ...`) or skipped (`skip ...`), else RlaifError.

    `run_dir`: the run directory a resume writes to (default: a new one under `run.root`). `here=False` is a run
    submitted to a remote cluster: its model, sandboxes, run root and judge keys are the cluster's, which the run's
    own preflight checks when the job starts there. `probe`: also make one real call to each judge. `submitted`: a
    job for a Ray cluster (`rlaif launch`), whose placement `rlaif.cluster.jobs` checks against the cluster's nodes.

    Cheap checks come first: the model's (its tokenizer loads `transformers`, seconds) comes last.
    """
    env, tasks = load_tasks(config.env)
    done = [f"ok  environment {config.env.name}: " + ", ".join(f"{len(tasks[s])} {s}" for s in SPLITS) + " tasks"]
    if not here:
        return [*done, "skip model, sandbox, judges, run root: they are the cluster's, checked when the job starts",
                SKIP_PLACEMENT]
    done += ["ok  " + check_judge(judge, probe) for judge in config.reward.judges]
    where, what = (run_dir, "run directory") if run_dir is not None else (Path(config.run.root), "run.root")
    model = model_dir(config.model.path)
    done.append("ok  " + check_writable(where, what, None if model is None else weights_bytes(model)))
    # A run that joins a cluster runs its sandboxes on the cluster's `sandbox` nodes, which it checks once Ray is up.
    joins = bool(config.train.ray_address or os.environ.get("RAY_ADDRESS"))
    done.append(SKIP_PLACEMENT if joins or submitted else "ok  " + check_local_placement(config.train))
    if joins:
        done.append("skip sandbox: the cluster's sandbox nodes are checked once Ray is up")
    else:
        done.append("ok  " + check_sandbox(config.sandbox, sandbox_images(env, [t for s in SPLITS for t in tasks[s]])))
    if model is None:
        done.append(f"skip model {config.model.path}: a Hugging Face Hub id not in this machine's cache; the learners "
                    "and engines download it")
    else:
        first = tasks["train"][0]
        done.append("ok  " + check_model(model, env.prompt(first), env.tools(first),
                                         f"{config.env.name}'s first task"))
    return done


def check_local_placement(t: TrainConfig) -> str:
    """The layout fits the local Ray the run will start: this machine's GPUs, and CPUs it gives Ray enough of."""
    from rlaif.cluster.placement import check_fits, local_node, plan_layout

    node = local_node(t)
    check_fits(plan_layout(t), [node], LOCAL_RAY)
    return f"placement: fits {LOCAL_RAY}, {node['CPU']:g} CPUs, {node['GPU']:g} GPUs"


def sft_preflight(model: Path, out: Path) -> list[str]:
    """Check `rlaif sft`'s student and output folder (the dataset is `run_sft`'s to check, as it reads it)."""
    probe = [Message(role="user", content="Say hello.")]
    return ["ok  " + check_writable(out, "--out", weights_bytes(model)),
            "ok  " + check_model(model, probe, [], "a user turn")]


def episode_preflight(env: Environment, tasks: list[Task], *, out: Path, backend: str, config_path: str | None,
                      endpoint: str | None = None, flag: str = "--policy", model: Path | None = None) -> list[str]:
    """Check what `rlaif eval` and `rlaif collect` need before they start an engine or write `out`: the output
    folder, the judges of `config_path`, the policy's server at `endpoint` (a base URL; `flag` names the option that
    gave it), the sandbox backend and images, and `model`'s chat template (an in-process engine's)."""
    done = [f"ok  environment {env.name}: {len(tasks)} tasks", "ok  " + check_writable(out, "--out", None)]
    if config_path:
        from rlaif.core.config import load_reward_config

        done += ["ok  " + check_judge(judge, False) for judge in load_reward_config(config_path).judges]
    if endpoint is not None:
        done.append("ok  " + check_reachable(endpoint, flag))
    done.append("ok  " + check_sandbox(SandboxConfig(backend=backend), sandbox_images(env, tasks)))
    if model is not None:
        done.append("ok  " + check_model(model, env.prompt(tasks[0]), env.tools(tasks[0]), f"{env.name}'s first task"))
    return done


def check_reachable(url: str, flag: str, timeout_s: float = 5.0) -> str:
    """Something accepts a TCP connection at `url`'s host and port: a server that is not running fails here, not
    as every episode's infrastructure failure. Nothing is sent."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err)).lower()
        raise RlaifError(f"nothing answers at {url} ({flag}): {reason}; start the server or fix {flag}") from None
    return f"{flag} {url}: accepts connections"


def load_tasks(config: EnvConfig) -> tuple[Environment, dict[str, list[Task]]]:
    """The environment and its tasks by split; RlaifError when it does not load or a split is empty."""
    from rlaif.registry import load_environment

    env = load_environment(config.name, config.args)
    tasks = {split: env.tasks(split) for split in SPLITS}
    for split, found in tasks.items():
        if not found:
            raise RlaifError(f"environment {config.name!r} has no {split} tasks; check env.args "
                             f"({', '.join(f'{k}={v}' for k, v in config.args.items()) or 'none given'})")
    return env, tasks


def model_dir(path: str) -> Path | None:
    """The local directory `model.path` names: the path itself, or for a Hugging Face Hub id its snapshot in the
    local cache; None for a Hub id not downloaded yet.

    `org/name` is taken for a Hub id only when it is not a local path and `org` is not a local folder either
    (`models/tny` is a typo of `models/tiny`, not a model on the Hub), so a mistyped local path still fails here."""
    local = Path(path)
    parts = local.parts
    if local.exists() or local.is_absolute() or len(parts) != 2 or path.startswith(".") or Path(parts[0]).exists():
        return local
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(path, local_files_only=True))
    except HFValidationError:  # not a Hub id after all: a local path, which check_model reports missing
        return local
    except LocalEntryNotFoundError:
        return None


def check_model(path: str | Path, messages: list[Message], tools: list[ToolSpec], what: str) -> str:
    """The model directory has a config, a tokenizer and a chat template that renders `messages` with `tools` the
    way the engines render prompts (`rlaif.policies.engine`); `what` names the messages in the report."""
    from rlaif.models.modeldir import chat_tokenizer
    from rlaif.policies.endpoints import to_openai_message

    tokenizer = chat_tokenizer(path)
    specs = [tool.as_openai() for tool in tools]
    try:
        rendered = tokenizer.apply_chat_template([to_openai_message(m) for m in messages], tools=specs or None,
                                                 tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja raises TemplateError, and a template's own `raise_exception` anything
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise RlaifError(f"the chat template of {path} does not render {what} ({first}); fix its template "
                         "(chat_template.jinja or tokenizer_config.json) or choose another model") from None
    unseen = [tool.name for tool in tools if f'"{tool.name}"' not in rendered]
    if unseen:
        from rlaif.models.templates import TEMPLATES

        raise RlaifError(f"the chat template of {path} ignores tools: its prompt for {what} never shows `{unseen[0]}`, "
                         f"so the model could not call it; give it one that does with `rlaif model template {path} "
                         f"NAME` ({' or '.join(TEMPLATES)}) or a .jinja file in place of NAME")
    with_tools = f" with its {len(specs)} tools" if specs else ""
    return f"model {path}: config, tokenizer, chat template renders {what}{with_tools}"


def sandbox_images(env: Environment, tasks: list[Task]) -> set[str]:
    """The images the tasks' sandboxes start from: the episode's, where its tools need one, and those of graders that
    run in sandboxes (which name theirs as `image`, e.g. `CallTests`, `UnitTests`)."""
    images = {env.image_for(task) for task in tasks if env.needs_sandbox(task)}
    graders = [grader for task in tasks for grader in env.graders(task)]
    return images | {grader.image for grader in graders if isinstance(getattr(grader, "image", None), str)}


def check_sandbox(config: SandboxConfig, images: set[str]) -> str:
    """The sandbox backend answers here and, for docker, every image the tasks start from exists."""
    from rlaif.cluster.placement import sandbox_problem

    problem = sandbox_problem(config.backend)
    if problem:
        fix = ("start a Docker engine (`make setup` installs one) or set sandbox.backend=local"
               if config.backend == "docker" else "install bubblewrap (apt-get install bubblewrap) or set "
               "sandbox.backend=docker")
        raise RlaifError(f"sandbox.backend {config.backend}: {problem}; {fix}")
    if config.backend == "local":
        return "sandbox local: bubblewrap found"
    from rlaif.sandbox.images import image_exists, missing_image_fix, resolve_image

    images = {resolve_image(image, config.image) for image in images}
    missing = sorted(image for image in images if not image_exists(image))
    if missing:
        raise RlaifError(f"sandbox image {missing[0]} is not in the Docker engine (the environment's tasks start "
                         f"from it); {missing_image_fix(missing[0])}")
    shown = f"image{'s' if len(images) > 1 else ''} {', '.join(sorted(images))}" if images else "no image needed"
    return f"sandbox docker: the engine answers; {shown}"


def check_judge(judge: JudgeConfig, probe: bool) -> str:
    """The judge's endpoint parses and its key is set (never shown); with `probe`, one real call answers."""
    from rlaif_rewards.providers import ProviderError, provider_from_endpoint

    try:
        provider = provider_from_endpoint(judge.endpoint, judge.timeout_s, judge.extra_body)
    except RlaifError as err:
        raise RlaifError(f"judge {judge.name!r} (reward.judges): {err}") from None

    async def call() -> None:
        try:
            await provider.complete("Reply with the word OK.", "OK?", 16, 0.0)
        finally:
            await provider.close()

    try:
        asyncio.run(call() if probe else provider.close())
    except ProviderError as err:  # its message never holds the key
        raise RlaifError(f"judge {judge.name!r} ({judge.endpoint}) did not answer a probe call ({err}); check the "
                         "endpoint, the key and the network") from None
    return f"judge {judge.name} {judge.endpoint}: " + ("answered a probe call" if probe
                                                       else "endpoint parses, key set where one is needed")


def check_writable(path: Path, what: str, need: int | None) -> str:
    """`path` (or its nearest existing parent, where it will be created) takes a file and has `need` bytes free
    (None: a size not known here).

    The test file is made and removed at once, so nothing is left behind, not even `path` itself."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RlaifError(f"{what} {path} cannot be created: {existing} is a file; point {what} at a folder")
    try:
        fd, name = tempfile.mkstemp(dir=existing, prefix=".rlaif-preflight-")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise RlaifError(f"{what} {path} is not writable ({err.strerror} in {existing}); point {what} at a folder "
                         "you can write or fix its permissions") from None
    free = shutil.disk_usage(existing).free
    if need is None:
        return f"{what} {path}: writable, {_gib(free)} free"
    if free < need:
        raise RlaifError(f"{what} {path} has {_gib(free)} free, less than the {_gib(need)} a checkpoint takes "
                         f"(about {CHECKPOINT_FACTOR}x the model's weights); free some space or point {what} elsewhere")
    return f"{what} {path}: writable, {_gib(free)} free (a checkpoint takes about {_gib(need)})"


def weights_bytes(model: Path) -> int:
    """About the room one checkpoint of `model` takes: its safetensors files, `CHECKPOINT_FACTOR` times."""
    return CHECKPOINT_FACTOR * sum(f.stat().st_size for f in model.glob("*.safetensors"))


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
