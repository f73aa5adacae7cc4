"""`execution`, `runtime`: where stages run and where their outputs and records live."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from semflow.config.base import Section
from semflow.dag import POOL_STAGES


class ExecutionConfig(Section):
    """Where the heavy stages run. `inline`: in the flow's own process (one machine, the default).
    `pool`: each stage in `pool_stages` is a flow run of the deployment `semflow-stage/<stage>` (prefect.yaml
    puts them on the `semflow-gpu` work pool); the pipeline waits for it and reads its manifest from the
    artifact store, which both sides must reach (runtime.artifact_root)."""

    gpu_stages: Literal["inline", "pool"] = Field(
        "inline", description="inline: every stage in the flow's process; pool: pool_stages on the GPU work pool"
    )
    pool_stages: list[Literal[POOL_STAGES]] = Field(  # type: ignore[valid-type]
        ["generate_teacher", "scrg_correct", "distill_student", "describe_documents", "sedsi_index"],
        description="stages sent to the GPU pool when gpu_stages is pool",
    )
    stage_timeout_s: float | None = Field(None, gt=0, description="give up waiting for a stage's flow run")
    distill_processes: int = Field(
        1, ge=1, description="data-parallel processes for distillation training (torchrun; gloo on CPU, "
        "nccl with one GPU per process); not part of any cache key"
    )
    parallel: bool = Field(
        True, description="independent stages run at the same time (describe_documents beside distillation, "
        "cade_align beside sedsi_index); false: one after another"
    )


def _no_secret_in(value: str | None, key: str) -> str | None:
    """Credentials come from the environment, never from a preset (which is logged and committed)."""
    from urllib.parse import urlsplit

    if value and "://" in value and urlsplit(value).password:
        raise ValueError(
            f"{key} holds a password; put it in the environment instead (MLFLOW_TRACKING_URI, "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    return value


class RuntimeConfig(Section):
    """Paths and stores; none of it enters a cache key."""

    workdir: str = Field(".semflow", description="artifacts, MLflow store and PREFECT_HOME live here")
    artifact_root: str | None = Field(
        None, description="default: <workdir>/artifacts; a shared path or an fsspec URL (s3://bucket/semflow)"
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="default: sqlite under workdir; MLFLOW_TRACKING_URI overrides"
    )
    experiment: str = Field("semflow", description="MLflow experiment of the pipeline's runs")
    offline: bool = Field(True, description="set HF_HUB_OFFLINE / HF_DATASETS_OFFLINE for the run")
    model_cache: str | None = Field(None, description="default: ~/.cache/semflow/models")
    preview_rows: int = Field(20, gt=0, description="rows of each MLflow preview table")

    @model_validator(mode="after")
    def _no_credentials(self) -> RuntimeConfig:
        _no_secret_in(self.artifact_root, "runtime.artifact_root")
        _no_secret_in(self.mlflow_tracking_uri, "runtime.mlflow_tracking_uri")
        return self
