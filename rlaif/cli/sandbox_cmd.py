"""`rlaif sandbox`: build images, run one command in a fresh sandbox, clean up leftovers."""

from __future__ import annotations

import asyncio
import json
import signal

import typer

app = typer.Typer(help="Build and run sandboxes.", no_args_is_help=True)


@app.command("build")
def build(
    mirror: str | None = typer.Option(
        None, "--mirror", metavar="URL",
        help="Debian mirror debootstrap fetches from (http, https or file URI). Default: $RLAIF_APT_MIRROR, "
             "else the first Debian release's URI in this host's apt sources."),
) -> None:
    """Build the base sandbox image from Debian packages (no registry); skipped when up to date."""
    from rlaif.sandbox.images import build_base_image

    typer.echo(build_base_image(log=lambda line: typer.echo(line, err=True), mirror=mirror))


@app.command("run", context_settings={"allow_interspersed_args": False})
def run(
    cmd: list[str] = typer.Argument(..., help="The command and its arguments (after --)."),
    image: str = typer.Option("rlaif/base:latest", help="Image to start from (docker backend)."),
    backend: str = typer.Option("docker", help="docker or local (bubblewrap)."),
    timeout: float = typer.Option(30.0, help="Time limit, seconds; the whole process tree is killed at it."),
    memory: int = typer.Option(512, "--memory", help="Memory limit, MiB."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the output."),
) -> None:
    """Run one command in a fresh, hardened sandbox and remove it afterwards, even when interrupted.

    Exit code: 0 when the command succeeded, its own code when it exited non-zero, 1 otherwise
    (timeout, oom, output_truncated, infra_error; the status is printed on stderr).
    """
    from rlaif.sandbox.base import Limits

    limits = Limits(timeout_s=timeout, memory_mb=memory)
    result = asyncio.run(_run_once(backend, image, limits, cmd))
    if as_json:
        typer.echo(json.dumps(result.model_dump(exclude={"error"} if result.error is None else set())))
    else:
        typer.echo(result.stdout, nl=False)
        typer.echo(result.stderr, nl=False, err=True)
        if result.status != "ok":
            typer.echo(f"sandbox: {result.status}" + (f" ({result.error})" if result.error else ""), err=True)
    if result.status == "nonzero_exit" and result.exit_code and result.exit_code > 0:
        raise typer.Exit(result.exit_code)
    raise typer.Exit(0 if result.ok else 1)


async def _run_once(backend: str, image: str, limits, cmd: list[str]):
    from rlaif.sandbox.pool import start_sandbox

    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # SIGINT: asyncio.run cancels
    sandbox = await start_sandbox(backend, image, limits, run_id="cli")
    try:
        return await sandbox.exec(cmd)
    finally:
        await sandbox.close()


@app.command("gc")
def gc(
    everything: bool = typer.Option(False, "--all", help="Remove every rlaif sandbox, live runs' included."),
    run_id: str = typer.Option(None, "--run", help="Remove the sandboxes of this run id."),
) -> None:
    """Remove sandboxes whose owner process is gone (or all of them, or one run's).

    Also stops, always, the processes a dead driver started and nothing stopped (its Ray agents, say):
    their owner is gone, so they belong to no live run.
    """
    from rlaif.cluster.reaper import sweep_orphans
    from rlaif.sandbox.gc import collect_garbage

    stopped = sweep_orphans()  # first: a stopped process may own sandboxes, which are orphans only afterwards
    for description in stopped:
        typer.echo(f"stopped {description}")
    removed = collect_garbage(everything=everything, run_id=run_id)
    for name in removed:
        typer.echo(f"removed {name}")
    typer.echo(f"{len(removed)} removed, {len(stopped)} processes stopped")
