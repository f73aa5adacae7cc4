"""What every command shares: the Typer app, the console, the --config/--set options, loading a preset,
and turning errors into one line on stderr with an honest exit code.

Exit codes: 0 done; 1 a failure during work (a stage crashed, a server would not start); 2 bad input or
config (a malformed file, an unknown key, a value out of range): nothing was computed from it. A
traceback is printed only with `semflow --debug ...` or `SEMFLOW_DEBUG=1`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from semflow.config import ConfigError, PipelineConfig, load_config
from semflow.runtime import prepare_environment

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="semflow: distil, analyse and index with language models.")
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML preset, e.g. configs/default.yaml")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override KEY=VALUE (repeatable)")]
RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="MLflow run id of the stage run to read")]
DEFAULT_CONFIG = Path("configs/default.yaml")


class InputError(ValueError):
    """Bad input given on the command line (an empty query, --k 0): exit code 2."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line on stderr; `raise fail(...)` exits with `code`."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load(config: Path, overrides: list[str] | None) -> PipelineConfig:
    """The validated preset with its overrides; the environment prepared for Prefect and MLflow."""
    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as err:
        raise fail(str(err)) from None
    prepare_environment(cfg.runtime)
    return cfg


def debug() -> bool:
    return os.environ.get("SEMFLOW_DEBUG", "") not in ("", "0", "false")


def input_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean "your input is wrong" (exit 2), wherever they are raised."""
    from components.cade.errors import CadeError
    from components.data.errors import DataError
    from components.distill.data import DistillDataError
    from components.generation.batched import PromptTooLongError
    from components.models.student import VocabularyMismatch
    from components.sedsi.trie import TrieError

    return (ConfigError, DataError, CadeError, DistillDataError, PromptTooLongError, VocabularyMismatch, TrieError,
            InputError, FileNotFoundError)


LOG_LEVELS = ("warning", "info", "debug")


def quiet_logs() -> None:
    """What a run prints: our warnings and the result table. Prefect's own console output (the server
    banner, state changes, failure tracebacks) is switched off; its run logs still reach the Prefect API
    and its UI. No progress line per refresh when stderr is not a terminal. `semflow --log-level info`
    (or debug) shows everything."""
    import logging
    import sys

    from semflow.progress import quiet_when_not_a_terminal

    quiet_when_not_a_terminal()
    level = os.environ.get("SEMFLOW_LOG_LEVEL", "warning")
    ours = logging.DEBUG if level == "debug" else logging.INFO if level == "info" else logging.WARNING
    if level == "warning":
        # Prefect re-applies its logging config at times (the temporary server's start), so the setting
        # goes through its environment override, which every re-application reads.
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
    import mlflow  # noqa: F401  (configures its logger on import: adjust it afterwards)
    from prefect.logging.configuration import setup_logging

    setup_logging()
    logging.getLogger("mlflow").setLevel(max(ours, logging.WARNING) if level == "warning" else ours)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    for name in ("semflow", "tasks", "components", "flows"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(ours)
        logger.propagate = False  # Prefect's console handler (root) would drop or repeat them
