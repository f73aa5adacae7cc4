"""MLflow tracking: one parent run per flow run, one nested child run per executed stage.

The active MLflow run is per thread and Prefect may run a task in a worker thread, so nothing here
relies on an active run crossing threads: the parent is created through MlflowClient and each stage
opens its child with an explicit `parent_run_id`.

Example::

    parent = start_parent(cfg, config_path, flow_run_id)
    with stage_run(ctx, "prepare_data", {"data": cfg.data}) as run:
        mlflow.log_metric("rows", 10)
    finish_parent(ctx, "FINISHED", {"semflow.prepare_data.status": "Completed"})
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from semflow.config import PipelineConfig
from semflow.runtime import RunContext, artifact_root, mlflow_artifact_location, tracking_uri

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; lists stay one value."""
    if isinstance(tree, BaseModel):
        tree = tree.model_dump(mode="json")
    if not isinstance(tree, dict):
        return {prefix: str(tree)[:MAX_PARAM_LENGTH]}
    flat: dict[str, str] = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _experiment_id(client: MlflowClient, name: str, location: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another run may have created it between our lookup and create; anything else is an error.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def start_parent(cfg: PipelineConfig, config_path: str, flow_run_id: str | None,
                 resume_of: str | None = None) -> RunContext:
    ctx = run_context(cfg)
    tags = {"semflow.config": config_path, "semflow.preset": cfg.name, **source_tags("semflow-pipeline")}
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    if resume_of:
        tags["semflow.resumed_from_flow_run"] = resume_of
    client = MlflowClient(ctx.tracking_uri)
    parent = client.create_run(ctx.experiment_id, run_name=f"pipeline-{cfg.name}", tags=tags)
    params = flatten(cfg.model_dump(mode="json", exclude={"runtime"}))
    client.log_batch(parent.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
    return ctx.model_copy(update={"parent_run_id": parent.info.run_id})


def run_context(cfg: PipelineConfig) -> RunContext:
    """Where a run's artifacts and MLflow runs go (the experiment is created on first use); no parent run:
    a stage run under it is a top-level MLflow run (e.g. `semflow index add`)."""
    uri = tracking_uri(cfg.runtime)
    client = MlflowClient(uri)
    location = mlflow_artifact_location(cfg.runtime) if uri.startswith("sqlite:") else None
    return RunContext(
        artifact_root=artifact_root(cfg.runtime),
        tracking_uri=uri,
        experiment_id=_experiment_id(client, cfg.runtime.experiment, location),
        model_cache=cfg.runtime.model_cache,
        preview_rows=cfg.runtime.preview_rows,
        offline=cfg.runtime.offline,
        distill_processes=cfg.execution.distill_processes,
    )


def finish_parent(ctx: RunContext, status: str, tags: dict[str, str]) -> None:
    client = MlflowClient(ctx.tracking_uri)
    for key, value in tags.items():
        client.set_tag(ctx.parent_run_id, key, value)
    client.set_terminated(ctx.parent_run_id, status=status)


@contextmanager
def stage_run(ctx: RunContext, stage: str, params: dict[str, Any]) -> Iterator[mlflow.ActiveRun]:
    """A child run of the pipeline's parent; FAILED if the body raises. The active run is per thread, so
    stages running at the same time in one process each have their own; the tracking URI is process-wide
    and the same for all of them (see tracking_store, which counts its users: outside a pipeline run, a
    test or a notebook, the process's previous store comes back when the stage ends)."""
    with tracking_store(ctx.tracking_uri), mlflow.start_run(
        experiment_id=ctx.experiment_id,
        run_name=stage,
        parent_run_id=ctx.parent_run_id,
        nested=ctx.parent_run_id is not None,
        tags={"semflow.stage": stage, **source_tags(f"semflow-pipeline/{stage}")},
    ) as run:
        mlflow.log_params(flatten(params))
        yield run


def source_tags(name: str) -> dict[str, str]:
    """What the MLflow runs table shows as a run's Source: the flow and stage, not the Python file that
    happened to start the process."""
    return {"mlflow.source.name": name, "mlflow.source.type": "JOB"}


def log_datasets(datasets: dict[str, tuple[str, str]]) -> None:
    """The prepared inputs a stage read, as MLflow datasets of the active run: name -> (uri, digest)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    for name, (uri, digest) in sorted(datasets.items()):
        mlflow.log_input(MetaDataset(LocalArtifactDatasetSource(uri), name=name, digest=digest[:36]), context=name)


_STORE_LOCK = threading.Lock()
_STORE_USERS: list[str] = []  # the URI of each user inside tracking_store, in order of entry
_STORE_BEFORE: list[str | None] = [None]  # MLFLOW_TRACKING_URI before the first user entered


@contextmanager
def tracking_store(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at `uri` while any user is inside, then restored.

    mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which `semflow.runtime.tracking_uri` reads
    as the user's choice; restoring it afterwards keeps one pipeline run from redirecting the next one in
    the same process (tests, notebooks) to its store. The URI is process-wide, so users are counted: a
    pipeline run and its concurrent stages (each enters again, with the same URI) share it; a user leaving
    while others remain puts back the latest remaining user's URI, and the last to leave restores what
    was there before the first came in."""
    with _STORE_LOCK:
        if not _STORE_USERS:
            _STORE_BEFORE[0] = os.environ.get("MLFLOW_TRACKING_URI")
        _STORE_USERS.append(uri)
        mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        with _STORE_LOCK:
            _STORE_USERS.remove(uri)
            mlflow.set_tracking_uri(_STORE_USERS[-1] if _STORE_USERS else _STORE_BEFORE[0])


def register_model(name: str, description: str, run_id: str, artifact: str, tags: dict[str, str]) -> int:
    """A new version of the registered model `name` (created on first use), its source the run's artifact
    folder `artifact`; returns the version number. The run also gets a LoggedModel (an "external" one:
    the weights stay in the run's artifacts as safetensors), so the runs table's Models column shows
    what the run produced, and the model and the registered version name each other."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as err:
        if "already exists" not in str(err).lower():  # a concurrent run created it first: fine
            raise
    version = client.create_model_version(name, source=f"runs:/{run_id}/{artifact}", run_id=run_id, tags=tags)
    # A registry version built from a model_id must take its source from that model (a REST store refuses
    # runs:/ with model_id), so the two are linked by tags instead.
    logged = mlflow.create_external_model(name=name, source_run_id=run_id, model_type=name,
                                          tags={**tags, "registered_model": name, "registered_version": version.version})
    client.set_model_version_tag(name, version.version, "logged_model_id", logged.model_id)
    return int(version.version)
