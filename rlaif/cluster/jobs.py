"""Runs as Ray jobs: what `rlaif launch` submits, and how it finds the cluster.

A run is submitted through Ray's Job Submission API as the entrypoint `rlaif train rlaif-job.yaml` (or
`rlaif train --resume RUN`), in a working directory Ray uploads: a copy of `launch.working_dir` (if any) plus
the resolved config. Everything that can be checked before anything runs on the cluster is checked here,
so a bad submission leaves nothing behind: the config validates, the environment variables it names are set,
the run directory's root is a path the job can write and find again, and the layout fits the cluster's
nodes (read through the dashboard's state API).

Without an address, the job goes to a Ray head on this machine, pinned to 127.0.0.1 (started in the
background if none answers; `ray stop` ends it).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rlaif.cluster.placement import check_fits, plan_layout
from rlaif.core.config import Config, dump_config, load_config
from rlaif.errors import RlaifError

LOCAL_ADDRESS = "http://127.0.0.1:8265"
JOB_CONFIG = "rlaif-job.yaml"
ALWAYS_EXCLUDED = (".git", ".venv", "__pycache__", "*.pyc")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    address: str
    run_root: str


def is_local(address: str) -> bool:
    return urlparse(address if "://" in address else f"http://{address}").hostname in ("127.0.0.1", "localhost")


def connect(address: str) -> Any:
    """A JobSubmissionClient for the dashboard at `address`.

    Like Ray's own CLI, a token in ~/.ray/auth_token (or RAY_AUTH_TOKEN) turns token authentication on, unless
    RAY_AUTH_MODE says otherwise: a head started with such a token refuses clients without it. Raises
    ConnectionError when nothing answers, RlaifError when the cluster wants a token this shell lacks.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        quiet = logging.getLogger(maybe_enable_token_auth_if_token_available.__module__)
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # it warns "enabled" on every call
        try:
            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        finally:
            quiet.setLevel(level)
    except ImportError:  # a Ray without token authentication
        pass
    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise RlaifError(f"the Ray cluster at {address} requires an authentication token; put the cluster's token "
                         "in ~/.ray/auth_token or RAY_AUTH_TOKEN (`ray get-auth-token` prints it on the head)"
                         ) from None
    except (RuntimeError, ValueError) as err:
        raise ConnectionError(str(err)) from None


def client(address: str | None, num_cpus: int | None = None) -> tuple[Any, str]:
    """A JobSubmissionClient for `address`, or for this machine's Ray head (started with `num_cpus` if need be)."""
    target = address or LOCAL_ADDRESS
    try:
        return connect(target), target
    except ConnectionError as err:
        if address is not None:
            raise RlaifError(f"no Ray dashboard answers at {address} ({_first_line(err)}); check the address (the "
                             "head's dashboard, port 8265 by default) and that the cluster is up") from None
    return connect(start_local_head(num_cpus)), LOCAL_ADDRESS


def start_local_head(num_cpus: int | None = None) -> str:
    """Start a Ray head on 127.0.0.1 in the background, with its dashboard (the Job API) on port 8265."""
    from rlaif.cluster.local_ray import LOOPBACK_ENV

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **LOOPBACK_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(bin_dir / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
               "--dashboard-port=8265", "--include-dashboard=true", "--disable-usage-stats"]
    if num_cpus:
        command.append(f"--num-cpus={num_cpus}")
    print("starting a local Ray head on 127.0.0.1 (stop it with `ray stop`)", file=sys.stderr)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RlaifError(f"could not start a local Ray head: {_first_line(done.stderr or done.stdout)}")
    for _ in range(60):  # the dashboard answers a few seconds after `ray start` returns
        try:
            connect(LOCAL_ADDRESS)
            return LOCAL_ADDRESS
        except ConnectionError:
            time.sleep(1)
    raise RlaifError(f"the local Ray head started but its dashboard does not answer at {LOCAL_ADDRESS}")


def prepare(config_path: str | Path | None, overrides: Sequence[str], *, local: bool,
            resume: Path | None = None) -> tuple[Config, list[str]]:
    """The validated, resolved config and the job's entrypoint arguments (after `rlaif train`)."""
    if resume is not None:
        source = resume / "config.yaml"
        if not source.is_file():
            raise RlaifError(f"--resume {resume}: no config.yaml there; run `rlaif launch --resume` where the run "
                             "directory is readable (on the head node or shared storage)")
        config = load_config(source, overrides)
        if not resume.is_absolute():
            raise RlaifError(f"--resume {resume} must be an absolute path, as the job on the cluster sees it")
        return config, ["--resume", str(resume), *overrides]
    if config_path is None:
        raise RlaifError("no config file: run `rlaif launch CONFIG [KEY=VALUE ...]`, e.g. examples/cpu-tiny.yaml")
    config = load_config(config_path, overrides)
    return _resolved(config, local), [JOB_CONFIG]


def _resolved(config: Config, local: bool) -> Config:
    """Local paths made absolute where the job can reach this machine's files; refused where it cannot."""
    updates: dict[str, Any] = {}
    root = Path(config.run.root)
    if not root.is_absolute():
        if not local:
            raise RlaifError(f"run.root {config.run.root!r} is relative, but a job runs in a temporary folder on the "
                             "cluster: set run.root to an absolute path on the head node (shared storage, so that "
                             "`--resume` finds it), e.g. run.root=/mnt/runs")
        updates["run"] = config.run.model_copy(update={"root": str(root.resolve())})
    if local and Path(config.model.path).exists():
        updates["model"] = config.model.model_copy(update={"path": str(Path(config.model.path).resolve())})
    if local:
        judges = [j.model_copy(update={"cache": str(Path(j.cache).resolve())}) if j.cache else j
                  for j in config.reward.judges]
        updates["reward"] = config.reward.model_copy(update={"judges": judges})
    return config.model_copy(update=updates)


def job_env(config: Config) -> dict[str, str]:
    """The values of `launch.env_vars`, from this shell; a name that is not set is an error."""
    missing = [name for name in config.launch.env_vars if name not in os.environ]
    if missing:
        raise RlaifError(f"launch.env_vars names {', '.join(missing)}, not set in this shell; export "
                         f"{'it' if len(missing) == 1 else 'them'} or remove {'it' if len(missing) == 1 else 'them'} "
                         "from launch.env_vars")
    return {name: os.environ[name] for name in config.launch.env_vars}


def check_cluster(config: Config, address: str) -> None:
    """Refuse a layout the cluster's alive nodes can never hold (see `rlaif.cluster.placement`)."""
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=address, detail=True, raise_on_missing_output=False)
    except Exception as err:  # any failure to read the cluster is reported as one line
        raise RlaifError(f"could not read the nodes of the Ray cluster at {address} ({_first_line(err)})") from None
    check_fits(plan_layout(config.train), [n.resources_total for n in nodes if n.state == "ALIVE"])


def stage(config: Config, working_dir: Path) -> None:
    """Fill `working_dir` with a copy of `launch.working_dir` (minus excludes) and the resolved config."""
    source = config.launch.working_dir
    if source:
        src = Path(source)
        if not src.is_dir():
            raise RlaifError(f"launch.working_dir {source!r} is not a folder; point it at your plugin or data folder")
        patterns = [*ALWAYS_EXCLUDED, *config.launch.excludes]
        shutil.copytree(src, working_dir, dirs_exist_ok=True,
                        ignore=lambda _, names: [n for n in names if any(fnmatch(n, p.rstrip("/")) for p in patterns)])
    (working_dir / JOB_CONFIG).write_text(dump_config(config))


def submit(config_path: str | Path | None, overrides: Sequence[str], *, address: str | None,
           resume: Path | None = None) -> Submitted:
    """Check everything that can be checked here, then submit the run; nothing reaches the cluster on error."""
    local = address is None or is_local(address)
    config, train_args = prepare(config_path, overrides, local=local, resume=resume)
    env = job_env(config)
    cpus = sum(bundle.get("CPU", 0.0) for _, bundle, _ in plan_layout(config.train).actors())
    jobs, target = client(address, num_cpus=max(os.cpu_count() or 1, math.ceil(cpus) + 1))
    check_cluster(config, target)
    runtime_env: dict[str, Any] = {"env_vars": env}
    if config.launch.pip:
        runtime_env["pip"] = list(config.launch.pip)
    job_id = f"rlaif-{config.run.name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    with tempfile.TemporaryDirectory(prefix="rlaif-job-") as staging:
        if resume is None:
            stage(config, Path(staging))
            runtime_env["working_dir"] = staging
        entrypoint = shlex.join(["rlaif", "train", *train_args])
        for attempt in range(30):
            try:
                jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=job_id,
                                metadata={"rlaif_run": config.run.name, "run_root": config.run.root})
                break
            except Exception as err:  # Ray raises RuntimeError or its own errors here
                # A head that has just started answers before its job agent is up: "try again later".
                if "try again later" not in str(err) or attempt == 29:
                    raise RlaifError(f"Ray refused the job: {_first_line(err)}") from None
                time.sleep(2)
    return Submitted(job_id, target, config.run.root)


def _first_line(err: object) -> str:
    text = str(err).strip()
    return (text.splitlines() or [type(err).__name__])[0][:300]

