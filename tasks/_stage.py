"""The stage runner every stage task shares: cache key, store lookup, MLflow child run, atomic write.

A stage task module defines `key(...) -> StageKey` (what its artifact depends on) and the task itself,
decorated with `@cached_stage(key)`. Both take the stage's declared inputs by name (semflow.dag): its
config sections and its upstream stages' manifests. The task calls `run_stage(key(...), run, body)`
with a `body(out)` that writes the stage's files through `out` (an `Outputs` over a temporary
directory) and returns `(metrics, previews)`.

`run_stage` returns the existing manifest when the store already holds the key (e.g. Prefect's result
cache was cleared), and otherwise runs the body inside an MLflow child run (params derived from the
same StageKey as the cache key) and publishes the finished directory (a rename, or an upload for a URL
store). It holds the store's lock for the key meanwhile, so two runs of the same config started
together compute each stage once: the second waits, then finds the first's artifact.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from semflow.caching import StageKey, combine_digests
from semflow.dag import stage as declared
from semflow.memory import release_memory
from semflow.runtime import RunContext
from semflow.store import MANIFEST, ArtifactStore, OutputRef, StageManifest, digest_dir, local_dir

log = logging.getLogger(__name__)


class Outputs:
    """The files a stage writes, each with its reference (path + content digest) for the manifest."""

    def __init__(self, root: Path):
        self.root = root
        self.refs: dict[str, OutputRef] = {}

    def table(self, name: str, frame: pd.DataFrame) -> Path:
        """`<name>.parquet` (components.data.write_dataset: stable bytes for equal frames)."""
        from components.data import write_dataset

        path = self.root / f"{name}.parquet"
        info = write_dataset(frame, path)
        self.refs[name] = OutputRef(path=path.name, digest=info.digest, rows=info.rows)
        return path

    def written_table(self, name: str) -> pd.DataFrame:
        """`<name>.parquet` that something else wrote under the root (a training job): registered, returned."""
        from components.data import content_digest, read_dataset

        frame = read_dataset(self.root / f"{name}.parquet")
        self.refs[name] = OutputRef(path=f"{name}.parquet", digest=content_digest(frame), rows=len(frame))
        return frame

    def folder(self, name: str, path: str | None = None) -> Path:
        """A folder already written under the root (a saved model, embeddings): digested as a whole."""
        folder = self.root / (path or name)
        self.refs[name] = OutputRef(path=folder.relative_to(self.root).as_posix(), digest=digest_dir(folder))
        return folder


Body = Callable[[Outputs], tuple[dict[str, float], dict[str, pd.DataFrame]]]


def cached_stage(key_fn: Callable[..., StageKey]):
    """The Prefect task decorator of the stage whose module defines `key_fn`.

    The artifact store is the cache: when it already holds the stage's key, the task returns that
    manifest in a `Cached` state without calling the task body (no model loads); otherwise the body
    computes the artifact. Prefect's own result cache is not used, so a deleted artifact can never
    be "cached", and nothing is pickled into Prefect's result storage."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.states import Completed

    stage = declared(key_fn.__module__.rpartition(".")[2]).name

    def decorate(fn: Callable[..., StageManifest]):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def cached_or_computed(*args: Any, **kwargs: Any):
            inputs = signature.bind(*args, **kwargs).arguments
            ctx: RunContext = inputs.pop("run")
            key = key_fn(**inputs)
            existing = ArtifactStore(ctx.artifact_root).manifest(stage, key.key)
            if existing is not None:
                return Completed(data=existing, name="Cached", message=f"artifact {existing.uri}")
            import_stage_modules(fn.__module__)
            token = _DATASETS.set(prepared_inputs(key, inputs))
            try:
                return fn(*args, **kwargs)
            finally:
                _DATASETS.reset(token)

        return task(name=stage, cache_policy=NO_CACHE, persist_result=False)(cached_or_computed)

    return decorate


_IMPORT_LOCK = threading.Lock()
# The prepared inputs (prompts, documents, corpora) the computing stage reads: logged as MLflow datasets
_DATASETS: contextvars.ContextVar[dict[str, tuple[str, str]]] = contextvars.ContextVar("datasets", default={})


def prepared_inputs(key: StageKey, inputs: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (uri, digest) of each prepare_data output this stage's key reads."""
    data = inputs.get("prepare_data")
    if not isinstance(data, StageManifest):
        return {}
    read = set(key.upstream.values())
    return {name: (f"{data.uri}/{ref.path}", ref.digest) for name, ref in data.outputs.items() if ref.digest in read}


def import_stage_modules(module: str) -> None:
    """Import every project module of a stage's import graph, one stage at a time.

    Stages run in threads at the same time, and transformers' lazy module is not thread-safe: two
    stages importing it at once fail with "cannot import name 'StaticCache' from 'transformers'". The
    graph is the one the cache key hashes (semflow.caching.import_closure)."""
    from semflow.caching import import_closure

    with _IMPORT_LOCK:
        for name in sorted(import_closure(module)):
            importlib.import_module(name)


def run_stage(key: StageKey, ctx: RunContext, body: Body) -> StageManifest:
    store = ArtifactStore(ctx.artifact_root)
    existing = store.manifest(key.stage, key.key)
    if existing is not None:
        log.info("%s: artifact %s already in the store, not recomputed", key.stage, key.key)
        return existing
    with store.lock(key.stage, key.key):
        # Look again: a concurrent run holding the lock may have finished this artifact while we waited.
        existing = store.manifest(key.stage, key.key)
        if existing is not None:
            log.info("%s: artifact %s was computed by a concurrent run while this one waited; not recomputed",
                     key.stage, key.key)
            return existing
        try:
            manifest = _compute(store, key, ctx, body)
        finally:  # the body's models are garbage now; without this the process keeps their pages (semflow.memory)
            release_memory()
        # The artifact is complete: scratch that only served to resume it (training checkpoints) goes.
        shutil.rmtree(store.work_dir(key.stage, key.key), ignore_errors=True)
    return manifest


def _compute(store: ArtifactStore, key: StageKey, ctx: RunContext, body: Body) -> StageManifest:
    import mlflow

    from semflow.tracking import log_datasets, stage_run

    stage = key.stage
    with stage_run(ctx, stage, key.params()) as run:
        log_datasets(_DATASETS.get())
        with store.writer(stage, key.key) as tmp:
            out = Outputs(tmp)
            metrics, previews = body(out)
            manifest = store.finish(
                tmp,
                StageManifest(
                    stage=stage,
                    key=key.key,
                    uri=store.uri(stage, key.key),
                    digest=combine_digests({name: ref.digest for name, ref in out.refs.items()}),
                    outputs=out.refs,
                    metrics=metrics,
                    mlflow_run_id=run.info.run_id,
                ),
            )
        kept = store.manifest(stage, key.key)
        if kept is not None and kept.created != manifest.created:
            # Another machine published the same key first (the lock is per machine): its copy stays.
            log.info("%s: artifact %s was published first by MLflow run %s; keeping that copy", stage, key.key,
                     kept.mlflow_run_id)
            manifest = kept
        mlflow.log_metrics(metrics)
        for name, frame in previews.items():
            mlflow.log_table(frame.head(ctx.preview_rows), artifact_file=f"preview/{name}.json")
        mlflow.log_artifact(str(store.local_dir(manifest) / MANIFEST))  # a local file for either kind of store
        mlflow.set_tag("semflow.artifact_uri", manifest.uri)
    return manifest


def work_dir(key: StageKey, ctx: RunContext) -> Path:
    """Scratch that survives a crash (training checkpoints): removed once the artifact is complete."""
    return ArtifactStore(ctx.artifact_root).work_dir(key.stage, key.key)


def output_path(manifest: StageManifest, name: str) -> Path:
    """A local path to one output of a stage; from a URL store the artifact is fetched into the cache once."""
    return local_dir(manifest) / manifest.output(name).path


def read_output(manifest: StageManifest, name: str) -> pd.DataFrame:
    """One table output of an upstream stage."""
    from components.data import read_dataset

    return read_dataset(output_path(manifest, name))


def load_stage_model(manifest: StageManifest, output: str, like, cache_root: str | None = None):
    """The model a stage saved (a student, an index backbone), loaded with the device and dtype of the
    ModelConfig `like` (the teacher's)."""
    from components.models import load_model

    loaded = load_model(like.model_copy(update={"spec": str(output_path(manifest, output))}), cache_root)
    loaded.name = f"{manifest.stage}/{manifest.key}"
    return loaded
