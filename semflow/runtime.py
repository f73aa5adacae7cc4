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
    offline: bool = True  # a worker process in pool mode applies it too (hub_offline)
    distill_processes: int = 1  # execution.distill_processes: how many ranks train, not what they compute


def workdir(runtime: RuntimeConfig) -> Path:
    return Path(runtime.workdir).expanduser().resolve()


def is_url(location: str) -> bool:
    """`s3://bucket/x`, `gs://...`, `memory://...`: an fsspec URL rather than a local path."""
    return "://" in location and not location.startswith("file://")


def artifact_root(runtime: RuntimeConfig) -> str:
    """The artifact store: a local folder (resolved), or an fsspec URL kept as written."""
    if not runtime.artifact_root:
        return str(workdir(runtime) / "artifacts")
    if is_url(runtime.artifact_root):
        return runtime.artifact_root.rstrip("/")
    location = runtime.artifact_root.removeprefix("file://")
    return str(Path(location).expanduser().resolve())


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
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if runtime.offline:
        hub_offline()
    home.mkdir(parents=True, exist_ok=True)


def hub_offline() -> None:
    """Nothing reaches the Hugging Face hub (unless the user's environment says otherwise)."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")


def redact(uri: str) -> str:
    """A URI fit for logs and terminals: `postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
