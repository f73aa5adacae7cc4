"""Pipeline commands: run, stages, config, ui, resume."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from semflow.cli.common import DEFAULT_CONFIG, ConfigOpt, SetOpt, app, console, err_console, fail, load, quiet_logs
from semflow.config import PipelineConfig
from semflow.runtime import artifact_root, prefect_home, redact, tracking_uri

StageOpt = Annotated[list[str] | None, typer.Option(help="stage name (repeatable)")]


@app.command()
def run(
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
    until: Annotated[list[str] | None, typer.Option(help="run this stage and everything upstream of it (repeatable)")] = None,
    only: Annotated[list[str] | None, typer.Option(help="run just this stage, its upstream read from the store (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would run and what is cached; run nothing")] = False,
) -> None:
    """Run the pipeline; stages whose artifact exists come back Cached and load nothing."""
    cfg = load(config, overrides)
    _check_stage_names(cfg, [*(until or []), *(only or [])])
    if dry_run:
        _plan_table(cfg, f"dry run: {config}", until, only)
        return
    quiet_logs()
    from flows.pipeline import pipeline  # imports Prefect, which reads PREFECT_HOME set above

    try:
        result = pipeline(str(config), overrides or [], until=until, only=only)
    except KeyboardInterrupt:
        err_console.print("interrupted: `semflow resume` finishes this run (finished stages come back Cached, "
                          "training continues from its last checkpoint)")
        raise typer.Exit(130) from None
    _report(cfg, config, overrides, result)


def _check_stage_names(cfg: PipelineConfig, names: list[str]) -> None:
    from semflow.dag import enabled
    from semflow.dag import names as all_names

    runs = [s.name for s in enabled(cfg)]
    for name in names:
        if name not in all_names():
            raise fail(f"unknown stage {name!r}; the stages are {', '.join(all_names())}")
        if name not in runs:
            raise fail(f"stage {name!r} does not run with this config (stages: {', '.join(runs)})")


def _metrics_cell(stage: str, metrics: dict[str, float]) -> str:
    from semflow.dag import headline

    return ", ".join(f"{k}={v:.3g}" for k, v in headline(stage, metrics).items())


def _report(cfg: PipelineConfig, config: Path, overrides: list[str] | None, result: dict) -> None:
    table = Table(title=f"semflow pipeline ({cfg.name})")
    for column in ("stage", "state", "key", "headline metrics"):
        table.add_column(column, no_wrap=column != "headline metrics", overflow="fold")
    for stage, info in result["stages"].items():
        table.add_row(stage, info["state"], info["key"], _metrics_cell(stage, info["metrics"]))
    console.print(table)
    for line in findings(result["stages"]):
        console.print(line, highlight=False)
    sets = "".join(f" --set {o}" for o in overrides or [])
    console.print(f"artifacts: {artifact_root(cfg.runtime)}")
    console.print(f"MLflow:    {redact(tracking_uri(cfg.runtime))} (parent run {result['mlflow_run_id']})")
    console.print(f"more:      semflow runs show {result['mlflow_run_id']} -c {config}{sets}   |   "
                  f"semflow ui -c {config}{sets}")


def findings(stages: dict[str, dict]) -> list[str]:
    """The results a reader should not have to dig for, from the stages' metrics: the distilled student
    against its healed start and the teacher (the paired bootstrap CI of after - before decides the verdict;
    teacher - before's CI says how large a gain this test split can show;
    the repetition shares and distinct-2 say whether the text degenerated), and which queries SE-DSI's
    metrics were computed on."""
    lines = []
    d = stages.get("distill_student", {}).get("metrics", {})
    if {"rougeL_gain", "rougeL_gain_ci_low", "rougeL_gain_ci_high"} <= d.keys():
        lo, hi = d["rougeL_gain_ci_low"], d["rougeL_gain_ci_high"]
        verdict = "better than before" if lo > 0 else "worse than before" if hi < 0 else \
            "no difference the CI can show"
        lines.append(f"distillation, ROUGE-L x100 on {d.get('test_prompts', float('nan')):.0f} test prompts: teacher "
                     f"{100 * d.get('rougeL_teacher', float('nan')):.1f}, before {100 * d['rougeL_before']:.1f}, "
                     f"after {100 * d['rougeL_after']:.1f}; after - before {100 * d['rougeL_gain']:+.1f} "
                     f"(95% CI {100 * lo:+.1f} to {100 * hi:+.1f}): {verdict}")
        if {"rougeL_headroom", "rougeL_headroom_ci_low", "rougeL_headroom_ci_high"} <= d.keys():
            lines.append(f"  teacher - before {100 * d['rougeL_headroom']:+.1f} (95% CI "
                         f"{100 * d['rougeL_headroom_ci_low']:+.1f} to {100 * d['rougeL_headroom_ci_high']:+.1f}): "
                         "what a student writing its teacher's answers would show")
        roles = [r for r in ("teacher", "before", "after") if f"repetition_share_{r}" in d]
        if roles:
            lines.append("  outputs with a 4-gram repeated 3+ times: " + ", ".join(
                f"{r} {100 * d[f'repetition_share_{r}']:.0f}%" for r in roles) + "; distinct-2: " + ", ".join(
                f"{r} {d.get(f'distinct2_{r}', float('nan')):.2f}" for r in roles))
    s = stages.get("sedsi_index", {}).get("metrics", {})
    if s:
        from components.sedsi.evaluation import HEADLINE_ORDER, QUERY_SET_NOTES, SYSTEMS

        for name in [n for n in HEADLINE_ORDER if f"{n}.queries" in s]:
            hits = ", ".join(f"{system} {s[f'{name}.{system}.hits_at_1']:.2f}" for system in SYSTEMS
                             if f"{name}.{system}.hits_at_1" in s)
            lines.append(f"SE-DSI {name}.* Hits@1 on {s[f'{name}.queries']:.0f} queries, {QUERY_SET_NOTES[name]}: "
                         f"{hits}")
    return lines


def _plan_table(cfg: PipelineConfig, title: str, until=None, only=None) -> None:
    from semflow.dag import upstream_closure
    from semflow.plan import plan

    root = artifact_root(cfg.runtime)
    selected = set(only) if only else (upstream_closure(until, cfg) if until else None)
    table = Table(title=title)
    for column in ("stage", "reads", "key", "status"):
        table.add_column(column, overflow="fold")
    for step in plan(cfg):
        if selected is not None and step.stage.name not in selected:
            status = "[dim]not selected[/dim]"
        elif step.manifest is not None:
            status = "[green]cached[/green]"
        else:
            status = "to run" if step.key else "to run (key known once upstream runs)"
        table.add_row(step.stage.name, ", ".join(step.stage.reads(cfg)) or "-", step.key or "-", status)
    console.print(table)
    console.print(f"artifacts: {root}/<stage>/<key>/")


@app.command()
def stages(config: ConfigOpt = DEFAULT_CONFIG, overrides: SetOpt = None) -> None:
    """Each stage with the stages it reads, its cache key and whether its artifact is already built."""
    cfg = load(config, overrides)
    _plan_table(cfg, f"stages for {config}")


@app.command("config")
def show_config(config: ConfigOpt = DEFAULT_CONFIG, overrides: SetOpt = None) -> None:
    """Print the validated config with every default filled in."""
    cfg = load(config, overrides)
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="", highlight=False)


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@app.command()
def ui(
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
    mlflow_port: Annotated[int, typer.Option(help="port of the MLflow UI")] = 5000,
    prefect_port: Annotated[int, typer.Option(help="port of the Prefect UI")] = 4200,
) -> None:
    """Start the MLflow UI and the Prefect server on 127.0.0.1 over this config's stores; Ctrl-C (or
    SIGTERM) stops both."""
    cfg = load(config, overrides)
    for name, port in (("--mlflow-port", mlflow_port), ("--prefect-port", prefect_port)):
        if _port_taken(port):
            raise fail(f"{name} {port}: the port is taken on 127.0.0.1 (another UI running?); pick another", 1)
    uri = tracking_uri(cfg.runtime)
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PREFECT_HOME=str(prefect_home(cfg.runtime)))
    commands = [
        [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(mlflow_port)],
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
    ]
    procs = [subprocess.Popen(c, env=env, start_new_session=True) for c in commands]
    stop = lambda *_: (_ for _ in ()).throw(KeyboardInterrupt)  # noqa: E731  SIGTERM stops the servers too
    signal.signal(signal.SIGTERM, stop)
    failed = None
    try:
        deadline = time.monotonic() + 120
        ready = [False, False]
        while not all(ready):  # both listening, or one died: fail fast instead of serving half
            for k, (proc, port) in enumerate(zip(procs, (mlflow_port, prefect_port), strict=True)):
                if proc.poll() is not None:
                    failed = f"{Path(commands[k][0]).name} exited with code {proc.returncode} before serving"
                ready[k] = ready[k] or _port_taken(port)
            if failed or time.monotonic() > deadline:
                failed = failed or "the servers did not start within 120 s"
                break
            time.sleep(0.5)
        if not failed:
            console.print(f"MLflow UI:  http://127.0.0.1:{mlflow_port}  (store {redact(uri)})")
            console.print(f"Prefect UI: http://127.0.0.1:{prefect_port}  (PREFECT_HOME {prefect_home(cfg.runtime)})")
            console.print("Ctrl-C stops both.")
            while all(p.poll() is None for p in procs):
                time.sleep(1)
            failed = "a server stopped: " + ", ".join(f"{Path(c[0]).name} exit {p.returncode}"
                                                   for c, p in zip(commands, procs, strict=True) if p.poll() is not None)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    if failed:
        raise fail(failed, 1)


@app.command()
def resume(
    flow_run_id: Annotated[str | None, typer.Argument(help="default: the newest pipeline run that failed or crashed")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="locates the embedded Prefect and MLflow stores "
                                         "when no PREFECT_API_URL is set")] = DEFAULT_CONFIG,
    overrides: SetOpt = None,
    here: Annotated[bool, typer.Option(help="run in this process even if the run came from a deployment")] = False,
) -> None:
    """Finish a failed or killed pipeline run: rerun its parameters; finished stages come back Cached and
    training continues from its last checkpoint. `--set` here only locates the stores (e.g.
    runtime.workdir); the run keeps its own overrides."""
    load(config, overrides)
    quiet_logs()
    from semflow.team import find_flow_run, mark_superseded, resume_via_deployment

    try:
        target = find_flow_run(flow_run_id)
    except LookupError as err:
        raise fail(str(err), 1) from None
    params = target.parameters
    run_cfg = load(Path(params.get("config_path", str(DEFAULT_CONFIG))), params.get("overrides"))
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

    result = pipeline(params.get("config_path", str(DEFAULT_CONFIG)), params.get("overrides") or [],
                      resume_of=target.flow_run_id, until=params.get("until"), only=params.get("only"))
    _report(run_cfg, Path(params.get("config_path", str(DEFAULT_CONFIG))), params.get("overrides"), result)
