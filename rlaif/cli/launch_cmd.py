"""`rlaif launch`: submit a run to a Ray cluster as a job, and watch, read or stop it.

    rlaif launch CONFIG [KEY=VALUE ...] [--address URL] [--follow]
    rlaif launch --resume RUN_DIR [KEY=VALUE ...] [--address URL] [--follow]
    rlaif launch status|logs|stop JOB [--address URL] [--follow]
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer

from rlaif.errors import RlaifError

ACTIONS = ("status", "logs", "stop")
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")


def launch_command(
    args: list[str] = typer.Argument(None, metavar="CONFIG [KEY=VALUE]... | status|logs|stop JOB",
                                     help="A config file and overrides to submit, or an action on a job."),
    address: str = typer.Option(None, "--address", envvar="RAY_API_SERVER_ADDRESS",
                                help="The cluster's dashboard, e.g. http://HEAD:8265 (default: a Ray head on this "
                                     "machine, started if none answers)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the job's logs until it ends."),
    resume: Path = typer.Option(None, "--resume", help="Continue this run directory (an absolute path on the "
                                                        "cluster) from its last checkpoint."),
) -> None:
    """Submit `rlaif train` to a Ray cluster through its Job API; watch, read or stop a submitted job.

    Before anything reaches (or starts) a cluster, the preflight checks the config (`rlaif.cli.preflight`): all of it
    for a cluster on this machine, what does not depend on the cluster's machines for a remote one."""
    from rlaif.cli.preflight import preflight
    from rlaif.cluster import jobs

    args = list(args or [])
    if args and args[0] in ACTIONS:
        if len(args) != 2:
            raise RlaifError(f"`rlaif launch {args[0]}` takes one job id, e.g. rlaif launch {args[0]} rlaif-run-...")
        _act(args[0], args[1], address, follow)
        return
    if resume is not None:
        if args and "=" not in args[0]:
            raise RlaifError("--resume takes its config from the run directory; pass only KEY=VALUE overrides")
        config_path, overrides = None, args
    else:
        if not args or "=" in args[0]:
            raise RlaifError("no config file: run `rlaif launch CONFIG [KEY=VALUE ...]`, e.g. examples/cpu-tiny.yaml")
        config_path, overrides = args[0], args[1:]
    local = address is None or jobs.is_local(address)
    config, _ = jobs.prepare(config_path, overrides, local=local, resume=resume)
    preflight(config, run_dir=resume, here=local, submitted=True)
    submitted = jobs.submit(config_path, overrides, address=address, resume=resume)
    typer.echo(submitted.job_id)
    where = "" if address is None else f" --address {submitted.address}"
    typer.secho(f"submitted to {submitted.address}; runs under {submitted.run_root}\n"
                f"  rlaif launch logs {submitted.job_id}{where} --follow\n"
                f"  rlaif launch stop {submitted.job_id}{where}", err=True)
    if follow:
        _follow(submitted.job_id, address)


def _act(action: str, job_id: str, address: str | None, follow: bool) -> None:
    client = _existing_client(address)
    try:
        if action == "status":
            info = client.get_job_info(job_id)
            typer.echo(f"{job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
        elif action == "stop":
            stopped = client.stop_job(job_id)
            typer.echo(f"{job_id}: {'stopping' if stopped else 'already ended'}")
        elif follow:
            _follow(job_id, address)
        else:
            typer.echo(client.get_job_logs(job_id), nl=False)
    except RuntimeError as err:
        if "does not exist" in str(err) or "404" in str(err):
            raise RlaifError(f"no job {job_id!r} on {address or 'the local Ray head'}; "
                             "`ray job list` shows the cluster's jobs") from None
        raise


def _existing_client(address: str | None) -> Any:
    from rlaif.cluster.jobs import LOCAL_ADDRESS, connect

    target = address or LOCAL_ADDRESS
    try:
        return connect(target)
    except ConnectionError:
        raise RlaifError(f"no Ray dashboard answers at {target}; pass --address http://HEAD:8265") from None


def _follow(job_id: str, address: str | None) -> None:
    """Print the job's logs as they come; exit non-zero unless it succeeds. Ctrl-C stops following, not the job."""
    client = _existing_client(address)

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            typer.echo(lines, nl=False)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        typer.secho(f"\nstopped following; the job goes on (`rlaif launch stop {job_id}` ends it)", err=True)
        raise typer.Exit(130) from None
    status = client.get_job_status(job_id)
    typer.secho(f"job {job_id}: {status}", err=True)
    if status != "SUCCEEDED":
        raise typer.Exit(1)
