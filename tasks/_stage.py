"""The part every stage task shares: store lookup, MLflow child run, atomic write, manifest.

A stage task computes its cache key, then calls `run_stage(...)` with a `body(tmp_dir)` that writes
the stage's files into a temporary directory and returns their refs and metrics. `run_stage` returns
the existing manifest when the store already holds the key (e.g. Prefect's result cache was cleared),
and otherwise runs the body inside an MLflow child run and publishes the finished directory (a rename,
or an upload for a URL store). It holds the store's lock for the key meanwhile, so two runs of the same
config started together compute each stage once: the second waits, then finds the first's artifact.
Stages read upstream files through `output_path`, which works for local and URL stores alike.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from semflow.caching import combine_digests
from semflow.runtime import RunContext
from semflow.store import MANIFEST, ArtifactStore, OutputRef, StageManifest, local_dir
from semflow.tracking import stage_run

log = logging.getLogger(__name__)

Body = Callable[[Path], tuple[dict[str, OutputRef], dict[str, float], dict[str, pd.DataFrame]]]


def cached_stage(stage: str, key_fn: Callable[..., str]):
    """The Prefect task decorator of every stage: cached under our key, its manifest persisted as JSON
    (Prefect's default result serializer pickles, and loading a pickle can run code)."""
    from prefect import task

    return task(name=stage, cache_key_fn=prefect_cache_key(stage, key_fn), persist_result=True,
                result_serializer="json")


def prefect_cache_key(stage: str, key_fn: Callable[..., str]) -> Callable[[Any, dict[str, Any]], str]:
    """A Prefect cache_key_fn that ignores per-run parameters (the RunContext) by construction."""

    def cache_key_fn(_context: Any, parameters: dict[str, Any]) -> str:
        inputs = {k: v for k, v in parameters.items() if k != "run"}
        return f"{stage}-{key_fn(**inputs)}"

    return cache_key_fn


def run_stage(stage: str, key: str, ctx: RunContext, params: dict[str, Any], body: Body) -> StageManifest:
    store = ArtifactStore(ctx.artifact_root)
    existing = store.manifest(stage, key)
    if existing is not None:
        log.info("%s: artifact %s already in the store, not recomputed", stage, key)
        return existing
    with store.lock(stage, key):
        # Look again: a concurrent run holding the lock may have finished this artifact while we waited.
        existing = store.manifest(stage, key)
        if existing is not None:
            log.info("%s: artifact %s was computed by a concurrent run while this one waited; not recomputed",
                     stage, key)
            return existing
        manifest = _compute(store, stage, key, ctx, params, body)
        # The artifact is complete: scratch that only served to resume it (training checkpoints) goes.
        shutil.rmtree(store.work_dir(stage, key), ignore_errors=True)
    return manifest


def _compute(store: ArtifactStore, stage: str, key: str, ctx: RunContext, params: dict[str, Any],
             body: Body) -> StageManifest:
    with stage_run(ctx, stage, params) as run:
        with store.writer(stage, key) as tmp:
            outputs, metrics, previews = body(tmp)
            manifest = store.finish(
                tmp,
                StageManifest(
                    stage=stage,
                    key=key,
                    uri=store.uri(stage, key),
                    digest=combine_digests({name: ref.digest for name, ref in outputs.items()}),
                    outputs=outputs,
                    metrics=metrics,
                    mlflow_run_id=run.info.run_id,
                ),
            )
        kept = store.manifest(stage, key)
        if kept is not None and kept.created != manifest.created:
            # Another machine published the same key first (the lock is per machine): its copy stays.
            log.info("%s: artifact %s was published first by MLflow run %s; keeping that copy", stage, key,
                     kept.mlflow_run_id)
            manifest = kept
        mlflow.log_metrics(metrics)
        for name, frame in previews.items():
            mlflow.log_table(frame.head(ctx.preview_rows), artifact_file=f"preview/{name}.json")
        mlflow.log_artifact(str(store.local_dir(manifest) / MANIFEST))  # a local file for either kind of store
        mlflow.set_tag("semflow.artifact_uri", manifest.uri)
    return manifest


def output_path(manifest: StageManifest, name: str) -> Path:
    """A local path to one output of a stage; from a URL store the artifact is fetched into the cache once."""
    return local_dir(manifest) / manifest.output(name).path


def digest_dir(path: Path) -> str:
    """sha256 over a folder's relative file names and bytes (a saved model: weights, config, tokenizer)."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_student(manifest: StageManifest, teacher_model, teacher_cfg, cache_root=None):
    """The student saved by init_student, on the teacher's device and dtype, vocabulary checked."""
    from components.models import LoadedModel, check_shared_vocab, load_model

    spec = teacher_cfg.model_copy(update={"spec": str(output_path(manifest, "student"))})
    student: LoadedModel = load_model(spec, cache_root)
    student.name = f"{manifest.stage}/{manifest.key}"
    check_shared_vocab(teacher_model.tokenizer, student.tokenizer, teacher_model.name, student.name)
    return student


def register_model(name: str, description: str, run_id: str, artifact: str, tags: dict[str, str]) -> int:
    """A new version of the registered model `name` (created on first use), its source the run's artifact
    folder `artifact`; returns the version number."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as err:
        if "already exists" not in str(err).lower():  # a concurrent run created it first: fine
            raise
    version = client.create_model_version(name, source=f"runs:/{run_id}/{artifact}", run_id=run_id, tags=tags)
    return int(version.version)
