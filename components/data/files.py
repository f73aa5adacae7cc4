"""Read records from a local JSONL/CSV/Parquet file or a Hugging Face dataset.

Usage::

    from semflow.config import FileSource
    from components.data.files import read_records
    records = read_records(FileSource(path="data/prompts.jsonl", limit=100))
    records[0]  # {'instruction': '...', 'answer': '...', '_where': 'data/prompts.jsonl:1'}

Each record is the source's row as a dict plus a ``_where`` key (``WHERE``) saying where it came
from: ``path:LINE`` for JSONL (1-based file line), ``path row N`` for CSV/Parquet (1-based data row,
header excluded) and ``hf:name[split] row N``. The schema layer puts it in its error messages.

Format "auto" picks the reader by suffix. ``limit`` keeps the first N records (JSONL stops parsing
there, so a malformed line after the limit is not reported). A source with no records is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.data.errors import DataError
from semflow.config import FileSource, HFSource

WHERE = "_where"
SUFFIXES = {".jsonl": "jsonl", ".json-lines": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def source_label(source: FileSource | HFSource) -> str:
    """How messages name a source: the path, or ``hf:name/config[split]``."""
    if isinstance(source, FileSource):
        return source.path
    config = f"/{source.config}" if source.config else ""
    return f"hf:{source.name}{config}[{source.split}]"


def resolve_format(source: FileSource) -> str:
    if source.format != "auto":
        return source.format
    suffix = Path(source.path).suffix.lower()
    if suffix not in SUFFIXES:
        accepted = ", ".join(SUFFIXES)
        raise DataError(
            f"{source.path}: cannot tell the format from suffix {suffix or '(none)'!r}; "
            f"accepted suffixes: {accepted} (or set format explicitly)"
        )
    return SUFFIXES[suffix]


def read_jsonl(path: str, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSON-lines file and the number of blank lines skipped."""
    records: list[dict[str, Any]] = []
    blank = 0
    # Binary + per-line decode so an encoding error can name its line too.
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if limit is not None and len(records) >= limit:
                break
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid UTF-8: {err}") from None
            if not line.strip():
                blank += 1
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: invalid JSON: {err}") from None
            if not isinstance(value, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object per line, got {type(value).__name__}"
                )
            value[WHERE] = f"{path}:{lineno}"
            records.append(value)
    return records, blank


def _frame_records(df: Any, label: str) -> list[dict[str, Any]]:
    records = df.to_dict("records")
    for i, record in enumerate(records, start=1):
        record[WHERE] = f"{label} row {i}"
    return records


def read_csv(path: str) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        # dtype=str: CSV has no types, so "007" stays "007" and an id column of digits stays text;
        # keep_default_na=False: an empty cell is "", not NaN (and "NA" is a string).
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: not a readable CSV file: {err}") from None
    return _frame_records(df, path)


def read_parquet(path: str) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file: {err}") from None
    return _frame_records(df, path)


def read_hf(source: HFSource) -> list[dict[str, Any]]:
    label = source_label(source)
    try:
        import datasets  # slow to import; only HF sources pay for it

        ds = datasets.load_dataset(source.name, source.config, split=source.split)
    except Exception as err:  # network, offline mode, missing cache, bad config/split, ...
        raise DataError(
            f"{label}: Hugging Face dataset could not be loaded (name={source.name!r}, "
            f"config={source.config!r}, split={source.split!r}); without the hub it must already "
            f"be in the local datasets cache: {type(err).__name__}: {err}"
        ) from None
    if source.limit is not None:
        ds = ds.select(range(min(source.limit, len(ds))))
    records = ds.to_list()
    for i, record in enumerate(records, start=1):
        record[WHERE] = f"{label} row {i}"
    return records


def read_source(source: FileSource | HFSource) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Records (each with ``_where``) and {reason: count} of what was skipped.

    Only JSONL skips anything (blank lines); other formats return {}.
    """
    skipped: dict[str, int] = {}
    if isinstance(source, HFSource):
        records = read_hf(source)
    else:
        path = Path(source.path)
        if not path.exists():
            raise DataError(f"data file not found: {source.path}")
        if not path.is_file():
            raise DataError(f"{source.path}: not a file")
        fmt = resolve_format(source)
        if fmt == "jsonl":
            records, skipped["blank_lines"] = read_jsonl(source.path, source.limit)
        elif fmt == "csv":
            records = read_csv(source.path)
        else:
            records = read_parquet(source.path)
    if source.limit is not None:
        records = records[: source.limit]
    if not records:
        raise DataError(f"{source_label(source)} has no records")
    return records, skipped


def read_records(source: FileSource | HFSource) -> list[dict[str, Any]]:
    """The source's records in order, each with a ``_where`` position label."""
    return read_source(source)[0]
