"""Data loading for semflow: prompts, documents and corpora as pandas tables (no Prefect/MLflow).

Usage::

    from semflow.config import load_config
    from components.data import build_prompts, write_dataset, skipped_counts
    cfg = load_config("configs/default.yaml")
    prompts = build_prompts(cfg.data.prompts, cfg.data.split)
    info = write_dataset(prompts, "out/prompts.parquet")
    skipped_counts(prompts)  # {reason: count} of dropped records, to log as metrics

Every bad-input error is a :class:`DataError` naming the file/dataset, record position and field.
"""

from components.data.builtin import builtin_skipped, lee_articles, text8_lines, wiki_articles
from components.data.datasets import (
    CORPUS_COLUMNS,
    DOCUMENT_COLUMNS,
    PROMPT_COLUMNS,
    DatasetInfo,
    build_corpora,
    build_documents,
    build_prompts,
    content_digest,
    read_dataset,
    skipped_counts,
    write_dataset,
)
from components.data.errors import DataError
from components.data.files import read_records
from components.data.prompts import builtin_prompts
from components.data.splits import assign_split

__all__ = [
    "CORPUS_COLUMNS",
    "DOCUMENT_COLUMNS",
    "PROMPT_COLUMNS",
    "DataError",
    "DatasetInfo",
    "assign_split",
    "build_corpora",
    "build_documents",
    "build_prompts",
    "builtin_prompts",
    "builtin_skipped",
    "content_digest",
    "lee_articles",
    "read_dataset",
    "read_records",
    "skipped_counts",
    "text8_lines",
    "wiki_articles",
    "write_dataset",
]
