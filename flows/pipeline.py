"""The semflow pipeline as one Prefect flow over the DAG declared in semflow/dag.py:

    prepare_data -> generate_teacher -> init_student -> scrg_correct -> distill_student -> cade_align
                 -> describe_documents ------------------------------------------------> sedsi_index

Run it::

    semflow run --config configs/smoke.yaml                  # the whole pipeline in about a minute
    semflow run --config configs/default.yaml --until distill_student

Every stage is a task submitted as soon as the stages it reads have finished, so independent branches
run at the same time (describe_documents beside the distillation branch, cade_align beside
sedsi_index); `execution.parallel: false` runs them one after another. Each stage returns a small
manifest (artifact URI, digest, MLflow run id, metrics) and comes back `Cached`, loading no model, when
the artifact store already holds its key. With `execution.gpu_stages: pool` the heavy stages run as
flow runs of their own deployments on the GPU work pool (flows/stage.py). `semflow resume` reruns a
failed or killed flow run with its own parameters: finished stages come back Cached and training
continues from its last checkpoint.
"""

from __future__ import annotations

import importlib
from typing import Any

from prefect import flow, task
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run
from prefect.states import Completed

from semflow.config import load_config
from semflow.dag import Stage, enabled, upstream_closure
from semflow.plan import plan, stage_inputs
from semflow.preflight import check_config, check_prepared
from semflow.runtime import RunContext, prepare_environment
from semflow.store import StageManifest
from semflow.tracking import finish_parent, start_parent, tracking_store


@flow(name="semflow-pipeline")
def pipeline(config_path: str = "configs/default.yaml", overrides: list[str] | None = None,
             resume_of: str | None = None, until: list[str] | None = None,
             only: list[str] | None = None) -> dict[str, Any]:
    """`until`: run these stages and everything upstream of them; `only`: run just these, upstream
    artifacts read from the store (they must be built). `resume_of`: the flow run this one resumes (set by
    `semflow resume`); recorded on the MLflow parent."""
    cfg = load_config(config_path, overrides or [])
    prepare_environment(cfg.runtime)
    check_config(cfg)
    selected = select(cfg, until, only)
    run = start_parent(cfg, config_path, str(flow_run.id) if flow_run.id else None, resume_of)
    futures: dict[str, PrefectFuture] = {}
    upstream = {p.stage.name: p.manifest for p in plan(cfg)} if only else {}
    try:
        with tracking_store(run.tracking_uri):
            for stage in selected:
                inputs = stage_inputs(stage, cfg, {**upstream, **futures})
                futures[stage.name] = submit(stage, inputs, run, cfg)
                if stage.name == "prepare_data":  # what needs the prepared inputs, before any model loads
                    futures[stage.name].wait()
                    if not futures[stage.name].state.is_completed():
                        break
                    check_prepared(cfg, futures[stage.name].result())
                if not cfg.execution.parallel:
                    futures[stage.name].wait()
            wait(list(futures.values()))
            summary = collect(futures)
    except BaseException:
        finish_parent(run, "FAILED", tags(summarise(futures)))
        raise
    finish_parent(run, "FINISHED", tags(summary))
    return {"mlflow_run_id": run.parent_run_id, "stages": summary}


def select(cfg, until: list[str] | None, only: list[str] | None) -> list[Stage]:
    """The enabled stages a run executes, in declaration (topological) order."""
    stages = enabled(cfg)
    names = {s.name for s in stages}
    for wanted in (until or []) + (only or []):
        if wanted not in names:
            raise ValueError(f"stage {wanted!r} is not part of this config's run; its stages: {', '.join(names)}")
    if only:
        missing = [p.stage.name for p in plan(cfg) if p.manifest is None and p.stage.name in
                   upstream_closure(only, cfg) - set(only)]
        if missing:
            raise ValueError(f"--only {','.join(only)}: upstream stage(s) {', '.join(missing)} have no artifact "
                             f"yet; run `semflow run --until {only[0]}` first")
        return [s for s in stages if s.name in only]
    if until:
        keep = upstream_closure(until, cfg)
        return [s for s in stages if s.name in keep]
    return stages


def submit(stage: Stage, inputs: dict[str, Any], run: RunContext, cfg) -> PrefectFuture:
    """Submit one stage: its cached task in this process, or a dispatch to its GPU-pool deployment.
    Upstream futures among the inputs are resolved by Prefect before the stage starts."""
    if cfg.execution.gpu_stages == "pool" and stage.name in cfg.execution.pool_stages:
        return dispatch_stage.with_options(name=f"{stage.name}@pool").submit(
            stage.name, inputs, run, cfg.execution.stage_timeout_s)
    stage_task = getattr(importlib.import_module(stage.task_module), stage.name)
    return stage_task.submit(**inputs, run=run)


@task(name="dispatch")
def dispatch_stage(stage: str, inputs: dict[str, Any], run: RunContext, timeout_s: float | None):
    """The stage as a flow run of `semflow-stage/<stage>` on the GPU pool; Cached when it was cached there."""
    from flows.stage import dispatch

    manifest, state_name = dispatch(stage, inputs, run, timeout_s)
    return Completed(data=manifest, name=state_name if state_name == "Cached" else "Completed")


def summarise(futures: dict[str, PrefectFuture]) -> dict[str, dict[str, Any]]:
    """Per stage: its state and, when it finished, its manifest's key, URI, MLflow run and metrics."""
    summary: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        state = future.state
        info: dict[str, Any] = {"state": state.name, "key": "", "uri": "", "mlflow_run_id": None, "metrics": {}}
        if state.is_completed():
            manifest: StageManifest = future.result()
            info.update(key=manifest.key, uri=manifest.uri, mlflow_run_id=manifest.mlflow_run_id,
                        metrics=manifest.metrics)
        summary[name] = info
    return summary


def collect(futures: dict[str, PrefectFuture]) -> dict[str, dict[str, Any]]:
    """The summary; or the first failed stage's own exception, with a note naming the stage (downstream
    stages never started)."""
    for name, future in futures.items():
        if future.state.is_failed() or future.state.is_crashed():
            try:
                future.result()
            except Exception as err:
                err.add_note(f"{STAGE_NOTE}{name}")
                raise
    return summarise(futures)


STAGE_NOTE = "semflow stage: "


def failed_stage(err: BaseException) -> str | None:
    """The stage a pipeline error came from (the note `collect` adds), if any."""
    for note in getattr(err, "__notes__", []):
        if note.startswith(STAGE_NOTE):
            return note.removeprefix(STAGE_NOTE)
    return None


def tags(summary: dict[str, dict[str, Any]]) -> dict[str, str]:
    out = {}
    for stage, info in summary.items():
        out[f"semflow.{stage}.state"] = info["state"]
        out[f"semflow.{stage}.run_id"] = info["mlflow_run_id"] or ""
        out[f"semflow.{stage}.artifact"] = info["uri"]
    return out
