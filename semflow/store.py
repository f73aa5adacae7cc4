"""The content-addressed artifact store: `<artifact_root>/<stage>/<key>/`, written atomically.

Example::

    store = ArtifactStore(".semflow/artifacts")
    with store.writer("prepare_data", key) as tmp:       # a temporary directory beside the target
        write_files(tmp)
        store.finish(tmp, manifest)                      # writes manifest.json
    # on leaving the block tmp is renamed to prepare_data/<key>/; on an exception it is deleted

A stage directory exists only once complete, so a crash never leaves half an artifact for a later run
to trust, and `manifest.json` inside it is what downstream stages and `semflow stages` read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

MANIFEST = "manifest.json"


class OutputRef(BaseModel):
    """One output file of a stage: where it is and a digest of its content."""

    path: str
    digest: str
    rows: int | None = None


class StageManifest(BaseModel):
    """What a stage returns through Prefect: small, JSON-serialisable, never models or frames."""

    stage: str
    key: str
    uri: str
    digest: str  # over the outputs' digests: changes exactly when some output's content changes
    outputs: dict[str, OutputRef] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def output(self, name: str) -> OutputRef:
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(f"stage {self.stage} has no output {name!r} (has {sorted(self.outputs)})") from None


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def work_dir(self, stage: str, key: str) -> Path:
        """Scratch space that outlives a failed run of this artifact (training checkpoints), hidden
        beside the artifact; run_stage removes it once the artifact is complete."""
        return self.root / stage / f".{key}.work"

    def manifest(self, stage: str, key: str) -> StageManifest | None:
        """The manifest of a complete artifact, or None when there is none."""
        file = self.path(stage, key) / MANIFEST
        if not file.is_file():
            return None
        return StageManifest.model_validate_json(file.read_text())

    def stage_dirs(self, stage: str) -> list[Path]:
        base = self.root / stage
        return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []

    @contextmanager
    def writer(self, stage: str, key: str) -> Iterator[Path]:
        target = self.path(stage, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Hidden temporary name in the same directory: the rename below is atomic on one filesystem.
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=target.parent))
        try:
            yield tmp
            if not (tmp / MANIFEST).is_file():
                raise RuntimeError(f"{stage}/{key}: writer closed without a manifest (call finish)")
            try:
                os.rename(tmp, target)
            except OSError:
                if not (target / MANIFEST).is_file():  # not a concurrent identical write: a real error
                    raise
                shutil.rmtree(tmp)  # another run wrote the same content-addressed artifact first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @staticmethod
    def finish(tmp: Path, manifest: StageManifest) -> StageManifest:
        """Write the manifest into the temporary directory; paths inside are made final."""
        (tmp / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
        return manifest
