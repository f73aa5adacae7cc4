"""The `semflow` command line. One module per group of commands:

    semflow run --config configs/smoke.yaml                  # pipeline: run, stages, config, ui, resume
    semflow compare --config configs/default.yaml            # distillation: compare, init-student
    semflow shift teacher student_after --top 20             # CADE: shift, neighbours
    semflow search "who built the first telescope" --k 10    # SE-DSI: search, index add
    semflow deploy && semflow worker --pool cpu              # a team: see docs/team.md

Errors are one line on stderr: exit 2 for bad input or config, 1 for a failure during work; a
traceback only with `--debug` (or SEMFLOW_DEBUG=1).
"""

from __future__ import annotations

import sys

from typing import Annotated

import typer
from rich.markup import escape

from semflow.cli.common import LOG_LEVELS, app, debug, err_console, input_error_types

# importing the modules registers their commands on `app`
from semflow.cli import cade, distill, pipeline, runs, sedsi, team  # noqa: E402,F401


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"semflow {version('semflow')}")
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
    log_level: Annotated[str, typer.Option(help=f"what runs print: {', '.join(LOG_LEVELS)} (warning: our warnings "
                                           "and the result; Prefect's run logs stay in its UI)")] = "warning",
) -> None:
    """semflow: distil, analyse and index with language models. `--debug` anywhere shows tracebacks."""
    import os

    if log_level not in LOG_LEVELS:
        raise typer.BadParameter(f"expected one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    os.environ["SEMFLOW_LOG_LEVEL"] = log_level

__all__ = ["app", "main"]


def main() -> None:
    """Typer handles usage errors itself (exit 2); every other error becomes one line here."""
    import os

    argv = sys.argv[1:]
    if "--debug" in argv:
        argv.remove("--debug")
        os.environ["SEMFLOW_DEBUG"] = "1"
    try:
        app(args=argv, prog_name="semflow")
    except Exception as err:
        if debug():
            import traceback

            traceback.print_exc()
            sys.exit(1)
        from flows.pipeline import failed_stage

        stage = failed_stage(err)
        where = f"{stage}: " if stage else ""
        code = 2 if isinstance(err, input_error_types()) else 1
        err_console.print(f"[red]error:[/red] {escape(where + str(err))}", highlight=False, soft_wrap=True)
        if stage:
            err_console.print("fix the cause, then [bold]semflow resume[/bold] (finished stages come back Cached); "
                              "--debug shows the traceback", highlight=False)
        sys.exit(code)
