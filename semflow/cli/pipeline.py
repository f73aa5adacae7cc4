"""Pipeline commands: run, stages, config, ui, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from semflow.cli.common import ConfigOpt, SetOpt, app, console, load
from semflow.config import PipelineConfig
from semflow.runtime import artifact_root, prefect_home, redact, tracking_uri


@app.command()
def run(config: ConfigOpt = Path("configs/default.yaml"), overrides: SetOpt = None,
        until: Annotated[list[str] | None, typer.Option(help="run this stage and its upstream only (repeatable)")] = None,
        only: Annotated[list[str] | None, typer.Option(help="run just this stage; upstream from the cache (repeatable)")] = None,
        ) -> None:
    """Run the pipeline; unchanged stages come back Cached."""
    cfg = load(config, overrides)
    from flows.pipeline import pipeline  # imports Prefect, which reads PREFECT_HOME set above

    _report(cfg, config, pipeline(str(config), overrides or [], until=until, only=only))


def _report(cfg: PipelineConfig, config: Path, result: dict) -> None:
    table = Table(title=f"semflow pipeline ({cfg.name})")
    for column in ("stage", "state", "key"):
        table.add_column(column, no_wrap=True)
    for stage, info in result["stages"].items():
        table.add_row(stage, info["state"], info["key"])
    console.print(table)
    for stage, info in result["stages"].items():
        headline = {k: v for k, v in info["metrics"].items()
                    if "." not in k or k.endswith((".rows", "hits_at_10", "collision_rate"))}
        console.print(f"{stage}: " + ", ".join(f"{k}={v:.4g}" for k, v in headline.items()))
    console.print(f"artifacts: {artifact_root(cfg.runtime)}")
    console.print(f"MLflow:    {redact(tracking_uri(cfg.runtime))} (parent run {result['mlflow_run_id']})")
    console.print("UIs:       semflow ui --config " + str(config))


@app.command()
def stages(config: ConfigOpt = Path("configs/default.yaml"), overrides: SetOpt = None) -> None:
    """Each stage with its upstream stages, cache key and whether its artifact is already built."""
    cfg = load(config, overrides)
    from semflow.plan import plan

    table = Table(title=f"stages for {config}")
    for column in ("stage", "reads", "key", "status", "artifact"):
        table.add_column(column, overflow="fold")
    for step in plan(cfg):
        status = ("[green]cached[/green]" if step.manifest else "to run") if step.key else "to run (after upstream)"
        table.add_row(step.stage.name, ", ".join(step.stage.reads(cfg)) or "-", step.key or "-", status,
                      step.manifest.uri if step.manifest else "")
    console.print(table)


@app.command("config")
def show_config(config: ConfigOpt = Path("configs/default.yaml"), overrides: SetOpt = None) -> None:
    """Print the validated config with every default filled in."""
    cfg = load(config, overrides)
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")


@app.command()
def ui(
    config: ConfigOpt = Path("configs/default.yaml"),
    mlflow_port: int = 5000,
    prefect_port: int = 4200,
) -> None:
    """Start the MLflow UI and the Prefect server on 127.0.0.1 over this config's stores."""
    cfg = load(config, None)
    uri = tracking_uri(cfg.runtime)
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PREFECT_HOME=str(prefect_home(cfg.runtime)))
    procs = [
        subprocess.Popen(
            [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(mlflow_port)],
            env=env,
        ),
        subprocess.Popen(
            [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            env=env,
        ),
    ]
    console.print(f"MLflow UI:  http://127.0.0.1:{mlflow_port}  (store {redact(uri)})")
    console.print(f"Prefect UI: http://127.0.0.1:{prefect_port}  (PREFECT_HOME {prefect_home(cfg.runtime)})")
    console.print("Ctrl-C stops both.")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=30)
    failed = [p.args[0] for p in procs if p.returncode not in (0, -signal.SIGINT, 130)]
    if failed:
        raise typer.Exit(1)


@app.command()
def resume(
    flow_run_id: Annotated[str | None, typer.Argument(help="default: the newest pipeline run that did not complete")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="locates the embedded Prefect and MLflow stores "
                                         "when no PREFECT_API_URL is set")] = Path("configs/default.yaml"),
    here: Annotated[bool, typer.Option(help="run in this process even if the run came from a deployment")] = False,
) -> None:
    """Finish a failed or killed pipeline run: rerun its parameters; finished stages come back Cached and
    training continues from its last checkpoint."""
    load(config, None)
    from semflow.team import find_flow_run, mark_superseded, resume_via_deployment

    try:
        target = find_flow_run(flow_run_id)
    except LookupError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    params = target.parameters
    run_cfg = load(Path(params.get("config_path", "configs/default.yaml")), params.get("overrides"))
    console.print(f"resuming {target.name} ({target.flow_run_id}, {target.state}): "
                  f"{params.get('config_path')} {' '.join(params.get('overrides') or [])}")
    mark_superseded(target, tracking_uri(run_cfg.runtime))
    if target.deployment_id and not here:
        flow_run = resume_via_deployment(target, None)
        console.print(f"flow run {flow_run.name} ({flow_run.id}): {flow_run.state.name if flow_run.state else '?'}")
        if not (flow_run.state and flow_run.state.is_completed()):
            raise typer.Exit(1)
        return
    from flows.pipeline import pipeline

    result = pipeline(params.get("config_path", "configs/default.yaml"), params.get("overrides") or [],
                      resume_of=target.flow_run_id)
    _report(run_cfg, Path(params.get("config_path", "configs/default.yaml")), result)


