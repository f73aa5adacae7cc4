"""Shared fixtures. Environment first: Prefect and the HF libraries read it when imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="semflow-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect API for the whole session (its cold start is ~25 s here)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def workdir(tmp_path, prefect_server):
    """A fresh working dir and Prefect result store per test, so no cache crosses tests."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(tmp_path / "prefect-results")}):
        yield tmp_path / "work"


def crash_after_checkpoint(monkeypatch, stage: str) -> None:
    """Make the Trainer raise right after writing a checkpoint of `stage` (its checkpoints live under
    `<artifact_root>/<stage>/.<key>.work/`): a run that fails mid-training, to resume from there."""
    from components.training import trainer

    original = trainer.Trainer.save

    def save_then_crash(self, step):
        path = original(self, step)
        if stage in str(self.ckpt_dir):
            raise RuntimeError(f"injected crash after {stage} checkpoint {step}")
        return path

    monkeypatch.setattr(trainer.Trainer, "save", save_then_crash)
