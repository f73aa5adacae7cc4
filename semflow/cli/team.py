"""Team commands: deploy (work pools + deployments), worker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from semflow.cli.common import app, console


@app.command()
def deploy(
    prefect_file: Annotated[Path, typer.Option(help="the deployments to register")] = Path("prefect.yaml"),
    gpu_concurrency: Annotated[int | None, typer.Option(help="flow runs the GPU pool runs at once")] = None,
) -> None:
    """Create the work pools semflow-cpu and semflow-gpu and register every deployment in prefect.yaml
    (on the Prefect API that PREFECT_API_URL names). Run it from the checkout the workers will use."""
    from semflow.team import deploy_commands, run_checked

    if not prefect_file.is_file():
        console.print(f"[red]{prefect_file}: no such file[/red] (run from the repository root)")
        raise typer.Exit(2)
    # run beside prefect.yaml: its pull step records that folder as the workers' working directory
    for command in deploy_commands(Path(prefect_file.name), gpu_concurrency):
        console.print("[dim]$ " + " ".join(command[1:]) + "[/dim]")
        try:
            run_checked(command, cwd=prefect_file.resolve().parent)
        except RuntimeError as err:
            console.print(f"[red]{err}[/red]")
            raise typer.Exit(1) from None


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="cpu: the pipeline flow; gpu: the heavy stages")] = "cpu",
    name: Annotated[str | None, typer.Option(help="worker name shown in the Prefect UI")] = None,
    limit: Annotated[int | None, typer.Option(help="flow runs this worker runs at once")] = None,
) -> None:
    """Start a Prefect process worker on semflow's CPU or GPU pool (`prefect worker start`)."""
    from semflow.team import POOLS, worker_command

    if pool not in POOLS:
        console.print(f"[red]--pool {pool}: expected one of {', '.join(POOLS)}[/red]")
        raise typer.Exit(2)
    command = worker_command(pool, name, limit)
    console.print("[dim]$ " + " ".join(command[1:]) + "[/dim]")
    os.execv(command[0], command)  # the worker is Prefect's own process: signals go straight to it


