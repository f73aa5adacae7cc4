"""Where a run keeps its state, and the environment it runs in.

Everything a run writes lives under one working directory (default `.semflow/` in the current
directory): `artifacts/` (the content-addressed store), `mlflow.db` + `mlartifacts/` (MLflow), and
`prefect/` (PREFECT_HOME for the embedded, serverless Prefect). Environment variables set by the user
always win over these defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from semflow.config import RuntimeConfig


class RunContext(BaseModel):
    """Per-run values handed to every stage task. Nothing here enters a cache key."""

    artifact_root: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None = None
    model_cache: str | None = None
    preview_rows: int = 20


def workdir(runtime: RuntimeConfig) -> Path:
    return Path(runtime.workdir).expanduser().resolve()


def artifact_root(runtime: RuntimeConfig) -> str:
    return str(Path(runtime.artifact_root).expanduser().resolve()) if runtime.artifact_root else str(workdir(runtime) / "artifacts")


def tracking_uri(runtime: RuntimeConfig) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if runtime.mlflow_tracking_uri:
        return runtime.mlflow_tracking_uri
    return f"sqlite:///{workdir(runtime) / 'mlflow.db'}"


def mlflow_artifact_location(runtime: RuntimeConfig) -> str:
    return (workdir(runtime) / "mlartifacts").as_uri()


def prefect_home(runtime: RuntimeConfig) -> Path:
    return workdir(runtime) / "prefect"


def prepare_environment(runtime: RuntimeConfig) -> None:
    """Set defaults for Prefect, MLflow and the Hugging Face libraries; call before importing them.

    - PREFECT_HOME under the working directory, so the embedded (temporary) Prefect API keeps its
      database and cached results with the run, and analytics are off ("database is locked" noise
      comes from the telemetry heartbeat otherwise).
    - HF_HUB_OFFLINE / HF_DATASETS_OFFLINE when `runtime.offline` (the default): nothing reaches a hub.
    """
    home = prefect_home(runtime)
    defaults = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # The temporary API server's first start runs its SQLite migrations (22-28 s on 2 idle cores);
        # Prefect's 20 s default fails on a fresh workdir or a busy machine.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    if runtime.offline:
        defaults |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    home.mkdir(parents=True, exist_ok=True)
