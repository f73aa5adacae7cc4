"""Stage 1: prompts, documents and corpora from files, HF datasets or the built-in offline sources."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from semflow.caching import file_digest, stage_key
from semflow.config import DataConfig
from semflow.runtime import RunContext
from semflow.store import OutputRef, StageManifest
from tasks._stage import cached_stage, run_stage

STAGE = "prepare_data"
MODULES = ("components.data", "tasks.prepare_data", "tasks._stage")


def _file_digests(data: DataConfig) -> dict[str, str]:
    """sha256 of every local input file, keyed by its path.

    File sources are named by path in the config; hashing their bytes too makes an edited input file
    a cache miss even when the config text is unchanged. A missing file is left out here: the stage
    itself then fails with an error naming it.
    """
    sources = [data.prompts, data.documents, *(c.source for c in data.corpora)]
    digests = {}
    for source in sources:
        path = Path(getattr(source, "path", "") or "")
        if source.kind == "file" and path.is_file():
            digests[f"file:{path}"] = file_digest(path)
    return digests


def cache_key(data: DataConfig) -> str:
    return stage_key(STAGE, {"data": data}, _file_digests(data), MODULES)


def _metrics(name: str, frame: pd.DataFrame) -> dict[str, float]:
    metrics = {f"{name}.rows": float(len(frame))}
    for reason, count in frame.attrs.get("skipped", {}).items():
        metrics[f"{name}.skipped.{reason}"] = float(count)
    if name == "prompts":
        for split, count in frame["split"].value_counts().items():
            metrics[f"prompts.split.{split}"] = float(count)
        metrics["prompts.with_reference"] = float(frame["reference"].notna().sum())
    if name == "corpora":
        for corpus, texts in frame.groupby("corpus", sort=False)["text"]:
            metrics[f"corpora.{corpus}.words"] = float(texts.str.split().str.len().sum())
    return metrics


@cached_stage(STAGE, cache_key)
def prepare_data(data: DataConfig, run: RunContext) -> StageManifest:
    from components.data import build_corpora, build_documents, build_prompts, write_dataset

    def body(tmp: Path):
        frames = {
            "prompts": build_prompts(data.prompts, data.split),
            "documents": build_documents(data.documents),
            "corpora": build_corpora(data.corpora),
        }
        outputs, metrics = {}, {}
        for name, frame in frames.items():
            info = write_dataset(frame, tmp / f"{name}.parquet")
            outputs[name] = OutputRef(path=f"{name}.parquet", digest=info.digest, rows=info.rows)
            metrics |= _metrics(name, frame)
        return outputs, metrics, frames

    return run_stage(STAGE, cache_key(data), run, {"data": data}, body)
