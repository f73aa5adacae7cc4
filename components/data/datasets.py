"""Top-level API: build the prompt, document and corpus tables, and write/read them as Parquet.

Usage::

    from semflow.config import BuiltinPrompts, BuiltinSource, CorpusConfig, SplitConfig
    from components.data import build_prompts, build_documents, write_dataset, skipped_counts
    prompts = build_prompts(BuiltinPrompts(per_family=8), SplitConfig())
    info = write_dataset(prompts, "out/prompts.parquet")  # DatasetInfo(path, rows, digest, ...)
    skipped_counts(prompts)                               # {'wiki_redirects': 99, ...}

Tables (text columns use pandas' ``str`` dtype; a missing value is NaN, test with ``pd.isna``):

- prompts: ``id, family, instruction, input, reference, split`` (reference may be missing);
- documents: ``doc_id, title, text``. Builtin documents get ids ``<corpus>-<index>``
  (``wiki-0003``); wiki titles are the page titles, a Lee article's title is its first 8 words
  followed by "…" (the corpus has no headlines), text8 lines have an empty title;
- corpora: ``corpus, text``: one row per article/line/record, corpora in config order, records in
  source order.

Skipped counts: every ``build_*`` result carries ``df.attrs["skipped"]``, a {reason: count} dict of
records the readers dropped (zero counts included), e.g. ``wiki_redirects``, ``wiki_empty_text``,
``blank_lines``, and for builtin prompts ``<family>_shortfall`` (prompts short of ``per_family``).
For corpora each key is prefixed with the corpus name (``news/lee_empty_lines``).
``skipped_counts(df)`` reads it. ``limit`` is not a skip: it is an explicit request. The attrs
survive ``write_dataset``/``read_dataset`` (pandas stores them in the Parquet metadata).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.data.builtin import (
    builtin_skipped,
    builtin_texts,
    lee_articles,
    text8_lines,
    wiki_articles,
)
from components.data.errors import DataError
from components.data.files import read_source, source_label
from components.data.prompts import builtin_prompts_with_skipped
from components.data.schema import is_missing, to_corpus_texts, to_documents, to_prompts
from components.data.splits import assign_split
from semflow.config import (
    BuiltinPrompts,
    BuiltinSource,
    CorpusConfig,
    FileSource,
    HFSource,
    SplitConfig,
)

PROMPT_COLUMNS = ["id", "family", "instruction", "input", "reference", "split"]
DOCUMENT_COLUMNS = ["doc_id", "title", "text"]
CORPUS_COLUMNS = ["corpus", "text"]
# Bumped if the canonical serialisation below ever changes, so old and new digests never collide.
DIGEST_SCHEME = "semflow-dataset-v1"
LEE_TITLE_WORDS = 8


@dataclass(frozen=True)
class DatasetInfo:
    """What write_dataset wrote: enough to log as MLflow params and to detect changed data."""

    path: str
    rows: int
    digest: str
    columns: list[str] = field(default_factory=list)


def skipped_counts(df: pd.DataFrame) -> dict[str, int]:
    """The {reason: count} of records dropped while building `df` ({} if it carries none)."""
    return dict(df.attrs.get("skipped", {}))


def _frame(rows: list[dict[str, Any]], columns: list[str], skipped: dict[str, int]) -> pd.DataFrame:
    # An explicit str dtype so every text column has the same dtype whatever the data: otherwise an
    # all-missing column (a file without references) would be object dtype holding None.
    df = pd.DataFrame(rows, columns=columns).astype({c: "str" for c in columns})
    df.attrs["skipped"] = dict(skipped)
    return df


def _limited(items: list[Any], limit: int | None) -> list[Any]:
    return items if limit is None else items[:limit]


def build_prompts(
    source: BuiltinPrompts | FileSource | HFSource, split_cfg: SplitConfig
) -> pd.DataFrame:
    """The prompt table with a train/val/test split per row (see splits.assign_split)."""
    if isinstance(source, BuiltinPrompts):
        rows, skipped = builtin_prompts_with_skipped(source)
    elif isinstance(source, (FileSource, HFSource)):
        records, skipped = read_source(source)
        rows = to_prompts(records, source_label(source), source.fields)
    else:
        raise DataError(f"unsupported prompt source: {type(source).__name__}")
    for row, split in zip(rows, assign_split([r["id"] for r in rows], split_cfg), strict=True):
        row["split"] = split
    return _frame(rows, PROMPT_COLUMNS, skipped)


def _lee_title(article: str) -> str:
    words = article.split()
    title = " ".join(words[:LEE_TITLE_WORDS])
    return title + "…" if len(words) > LEE_TITLE_WORDS else title


def _builtin_documents(source: BuiltinSource) -> list[dict[str, Any]]:
    if source.name == "wiki":
        pairs = wiki_articles()
    elif source.name == "lee":
        pairs = [(_lee_title(article), article) for article in lee_articles()]
    else:
        pairs = [("", line) for line in text8_lines()]
    return [
        {"doc_id": f"{source.name}-{i:04d}", "title": title, "text": text}
        for i, (title, text) in enumerate(_limited(pairs, source.limit))
    ]


def build_documents(source: BuiltinSource | FileSource | HFSource) -> pd.DataFrame:
    """The document table (doc_id, title, text)."""
    if isinstance(source, BuiltinSource):
        rows, skipped = _builtin_documents(source), builtin_skipped(source.name)
    elif isinstance(source, (FileSource, HFSource)):
        records, skipped = read_source(source)
        rows = to_documents(records, source_label(source), source.fields)
    else:
        raise DataError(f"unsupported document source: {type(source).__name__}")
    return _frame(rows, DOCUMENT_COLUMNS, skipped)


def build_corpora(corpora: list[CorpusConfig]) -> pd.DataFrame:
    """The corpus table (corpus, text), corpora in the given order."""
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for corpus in corpora:
        source = corpus.source
        if isinstance(source, BuiltinSource):
            texts = _limited(builtin_texts(source.name), source.limit)
            counts = builtin_skipped(source.name)
        else:
            records, counts = read_source(source)
            texts = to_corpus_texts(records, source_label(source), source.fields)
        rows.extend({"corpus": corpus.name, "text": text} for text in texts)
        skipped.update({f"{corpus.name}/{reason}": n for reason, n in counts.items()})
    return _frame(rows, CORPUS_COLUMNS, skipped)


def _canonical(value: Any) -> Any:
    if is_missing(value):
        return None
    if hasattr(value, "tolist"):  # numpy scalars and arrays -> plain Python values
        return value.tolist()
    return value


def content_digest(df: pd.DataFrame) -> str:
    """sha256 over the table's content: the scheme name, the column names, then one JSON array per
    row, newline-separated. Missing values (None/NaN/NA) all serialise as null.

    It hashes content rather than the Parquet bytes so that it depends neither on the pyarrow
    version, compression or row-group layout, nor on pandas dtypes, only on names and values.
    """
    digest = hashlib.sha256()
    digest.update(DIGEST_SCHEME.encode("utf-8"))
    digest.update(
        b"\n" + json.dumps([str(c) for c in df.columns], ensure_ascii=False).encode("utf-8")
    )
    for row in df.itertuples(index=False, name=None):
        line = json.dumps([_canonical(v) for v in row], ensure_ascii=False, default=str)
        digest.update(b"\n" + line.encode("utf-8"))
    return digest.hexdigest()


def write_dataset(df: pd.DataFrame, path: str | os.PathLike[str]) -> DatasetInfo:
    """Write `df` to Parquet at `path` (parents created, replaced atomically) and describe it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename: a crash never leaves a half-written file at `path`
    # that a cached pipeline step could mistake for a finished one.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, target)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not write dataset to {target}: {err}") from err
    return DatasetInfo(
        path=str(target),
        rows=len(df),
        digest=content_digest(df),
        columns=[str(c) for c in df.columns],
    )


def read_dataset(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a table written by write_dataset."""
    if not Path(path).is_file():
        raise DataError(f"dataset file not found: {path}")
    try:
        return pd.read_parquet(path)
    except Exception as err:
        raise DataError(f"{path}: not a readable Parquet dataset: {err}") from err
