"""Stage prepare_data: prompts, documents and corpora from files, HF datasets or the built-in offline
sources; validated (components/data: one error naming file, line and field), split, content-hashed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from semflow.caching import StageKey, file_digest
from semflow.config import DataConfig
from semflow.runtime import RunContext
from semflow.store import StageManifest
from tasks._stage import Outputs, cached_stage, run_stage


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


def key(data: DataConfig) -> StageKey:
    return StageKey(stage="prepare_data", config={"data": data}, upstream=_file_digests(data))


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


def _check_corpora_have_tokens(corpora: pd.DataFrame) -> None:
    """A corpus CADE could not learn a word from fails here, naming it, not after distillation."""
    from components.data import DataError
    from components.data.text import word_tokens

    for name, texts in corpora.groupby("corpus", sort=False)["text"]:
        if not any(word_tokens(t) for t in texts if isinstance(t, str)):
            raise DataError(f"data.corpora[{name}]: no usable tokens in its {len(texts)} text(s) (CADE "
                            "aligns words: give it text with words)")


@cached_stage(key)
def prepare_data(data: DataConfig, run: RunContext) -> StageManifest:
    from components.data import build_corpora, build_documents, build_prompts

    def body(out: Outputs):
        frames = {
            "prompts": build_prompts(data.prompts, data.split),
            "documents": build_documents(data.documents),
            "corpora": build_corpora(data.corpora),
        }
        _check_corpora_have_tokens(frames["corpora"])
        metrics = {}
        for name, frame in frames.items():
            out.table(name, frame)
            metrics |= _metrics(name, frame)
        return metrics, frames

    return run_stage(key(data), run, body)
