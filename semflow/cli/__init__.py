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

from semflow.cli.common import app, debug, err_console, input_error_types

# importing the modules registers their commands on `app`
from semflow.cli import cade, distill, pipeline, sedsi, team  # noqa: E402,F401

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
            raise
        from flows.pipeline import failed_stage

        stage = failed_stage(err)
        where = f"{stage}: " if stage else ""
        code = 2 if isinstance(err, input_error_types()) else 1
        err_console.print(f"[red]error:[/red] {where}{err}", highlight=False, soft_wrap=True)
        if stage:
            err_console.print("fix the cause, then [bold]semflow resume[/bold] (finished stages come back Cached); "
                              "--debug shows the traceback", highlight=False)
        sys.exit(code)
