"""One pipeline stage as its own flow, so a GPU work pool can run it (`execution.gpu_stages: pool`).

prefect.yaml deploys this flow once per heavy stage (`semflow-stage/distill_student`, ...) on the
`semflow-gpu` pool. The pipeline, running on the CPU pool, calls `dispatch(...)`: it starts the stage's
deployment with the stage task's inputs as JSON, waits for the flow run, and reads the stage's manifest
from the artifact store, which both sides reach (a shared path or an fsspec URL). Nothing travels
through Prefect's result storage, so workers need not share it.

The worker side rebuilds the typed inputs from the task's own signature and calls the very same cached
task the inline path calls: same cache key, same artifact, same MLflow child run under the pipeline's
parent (the RunContext carries its id).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, get_type_hints
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.tasks import Task
from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

from semflow.dag import POOL_STAGES
from semflow.dag import stage as declared
from semflow.runtime import RunContext, hub_offline, redact
from semflow.store import ArtifactStore, StageManifest
from semflow.tracking import tracking_store


STAGE_FLOW = "semflow-stage"  # prefect.yaml deploys this flow once per stage as semflow-stage/<stage>


class StageDispatchError(RuntimeError):
    """A stage's flow run on the pool did not complete, or completed without its artifact."""


def stage_task(stage: str) -> Task:
    if stage not in POOL_STAGES:
        raise ValueError(f"unknown pool stage {stage!r}; expected one of {', '.join(POOL_STAGES)}")
    return getattr(importlib.import_module(declared(stage).task_module), stage)


def stage_key(stage: str, inputs: dict[str, Any]) -> str:
    return importlib.import_module(declared(stage).task_module).key(**inputs).key


@flow(name=STAGE_FLOW, flow_run_name="{stage_name}")
def run_stage_flow(stage_name: str, inputs: dict[str, Any], run: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """Run one stage task on this worker; returns its manifest as JSON. `key`: the cache key the pipeline
    expects; a different one here means the worker's checkout differs from the pipeline's."""
    task = stage_task(stage_name)
    ctx = RunContext.model_validate(run)
    # The worker's own MLFLOW_TRACKING_URI wins: it may hold a password the pipeline never sends.
    uri = os.environ.get("MLFLOW_TRACKING_URI") or ctx.tracking_uri
    if ":***@" in uri:
        raise ValueError(f"{stage_name}: the pipeline's MLflow URI has a password ({uri}); set MLFLOW_TRACKING_URI "
                         "in this worker's environment")
    ctx = ctx.model_copy(update={"tracking_uri": uri})
    if ctx.offline:
        hub_offline()
    hints = get_type_hints(task.fn)
    unknown = sorted(set(inputs) - set(hints))
    if unknown:
        raise ValueError(f"{stage_name}: unexpected inputs {unknown}")
    typed = {name: TypeAdapter(hints[name]).validate_python(value) for name, value in inputs.items()}
    here = stage_key(stage_name, typed)
    if key is not None and here != key:
        raise ValueError(f"{stage_name}: this worker computes cache key {here}, the pipeline expects {key}; "
                         "do both run the same checkout (prefect.yaml's pull step) and package versions?")
    get_run_logger().info("%s on this worker: CUDA_VISIBLE_DEVICES=%s, MLflow parent run %s", stage_name,
                          os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), ctx.parent_run_id)
    with tracking_store(ctx.tracking_uri):
        manifest: StageManifest = task(**typed, run=ctx)
    return manifest.model_dump(mode="json")


def dispatch(stage: str, inputs: dict[str, Any], ctx: RunContext,
             timeout_s: float | None = None) -> tuple[StageManifest, str]:
    """Run `stage` through its deployment `semflow-stage/<stage>` and wait; returns its manifest and the
    stage task's final state name on the worker (Completed, or Cached when it was already known there)."""
    from prefect.deployments import run_deployment

    deployment = f"{STAGE_FLOW}/{stage}"
    key = stage_key(stage, inputs)  # the worker checks it computes the same
    sent = ctx.model_copy(update={"tracking_uri": redact(ctx.tracking_uri)})  # no password into Prefect's database
    flow_run = run_deployment(
        name=deployment,
        parameters={"stage_name": stage, "inputs": to_jsonable_python(inputs), "run": sent.model_dump(mode="json"),
                    "key": key},
        timeout=timeout_s,
    )
    state = flow_run.state
    if state is None or not state.is_completed():
        where = f"flow run {flow_run.name} ({flow_run.id}) of deployment {deployment}"
        if state is not None and not state.is_final():
            _cancel(flow_run.id)
            raise StageDispatchError(f"{stage}: {where} still {state.name} after {timeout_s} s; cancelled it")
        raise StageDispatchError(f"{stage}: {where} ended {state.name if state else 'without a state'}: "
                                 f"{state.message if state else ''}".rstrip(": "))
    manifest = ArtifactStore(ctx.artifact_root).manifest(stage, key)
    if manifest is None:
        raise StageDispatchError(
            f"{stage}: flow run {flow_run.id} completed but {ctx.artifact_root}/{stage}/{key} has no manifest; "
            "does the worker write to the same artifact_root (a shared path or fsspec URL)?"
        )
    return manifest, _task_state(flow_run.id, stage)


def _cancel(flow_run_id: UUID) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelling(message="the pipeline stopped waiting (stage_timeout_s)"))


def _task_state(flow_run_id: UUID, stage: str) -> str:
    """The stage task's state in the stage's flow run ("Unknown" if Prefect has no such task run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    states = [r.state.name for r in runs if r.name.startswith(stage) and r.state is not None]
    return states[-1] if states else "Unknown"
