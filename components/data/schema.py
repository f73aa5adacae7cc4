"""Map source columns onto our fields and validate each record.

Usage::

    from components.data.schema import to_prompts
    records = [{"question": "What is 2+2?", "answer": "4", "_where": "qa.jsonl:1"}]
    to_prompts(records, "qa.jsonl", {"instruction": "question", "reference": "answer"})
    # [{'id': '554944fd47eddada', 'family': 'custom', 'instruction': 'What is 2+2?', 'input': '',
    #   'reference': '4'}]

``fields`` maps OUR field name to the source's column name; a field that is not mapped is looked
up under its own name. Mapping a field we do not know is an error: it is almost always a typo that
would otherwise silently fall back to the default.

Values: text fields must be strings. A null (None/NaN/NA) or blank optional value means "absent" and
gets the default, which is what an empty CSV cell or a JSON null most likely means. Ids may be
strings or integers (integers are converted with ``str``). Columns we do not use are ignored.

Every error names the record (``_where`` from the reader, e.g. ``data.jsonl:3`` or
``data.csv row 3``; ``<source> record N`` when absent), the field, the column it was mapped to and,
for a missing field, the fields the record does have.
"""

from __future__ import annotations

import numbers
from typing import Any

from components.data.errors import DataError
from components.data.files import WHERE
from components.data.text import content_hash

PROMPT_FIELDS = ("id", "family", "instruction", "input", "reference")
DOCUMENT_FIELDS = ("doc_id", "title", "text")
CORPUS_FIELDS = ("text",)
DEFAULT_FAMILY = "custom"


def is_missing(value: Any) -> bool:
    """None, NaN and pandas.NA/NaT: the ways a null cell arrives from JSON, Parquet or pandas."""
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return value != value  # NaN is the only value unequal to itself
    return type(value).__name__ in {"NAType", "NaTType"}


def _check_mapping(fields: dict[str, str], known: tuple[str, ...], label: str) -> None:
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise DataError(
            f"{label}: unknown field(s) {unknown} in the fields mapping; "
            f"known fields: {list(known)}"
        )


class _Record:
    """One source record plus what is needed to describe it in an error."""

    def __init__(self, record: dict[str, Any], where: str, fields: dict[str, str]):
        self.record, self.where, self.fields = record, where, fields

    def _name(self, field: str) -> str:
        column = self.fields.get(field)
        return f"{field!r} (mapped to column {column!r})" if column else repr(field)

    def _wrong_type(self, field: str, value: Any, expected: str) -> DataError:
        return DataError(
            f"{self.where}: field {self._name(field)} must be {expected}, "
            f"got {type(value).__name__}: {value!r:.80}"
        )

    def required_text(self, field: str) -> str:
        column = self.fields.get(field, field)
        if column not in self.record:
            present = sorted(k for k in self.record if k != WHERE)
            raise DataError(
                f"{self.where}: missing required field {self._name(field)}; "
                f"fields present: {present}"
            )
        value = self.record[column]
        if is_missing(value):
            raise DataError(f"{self.where}: required field {self._name(field)} is null")
        if not isinstance(value, str):
            raise self._wrong_type(field, value, "a string")
        if not value.strip():
            raise DataError(f"{self.where}: required field {self._name(field)} is empty")
        return value

    def optional_text(self, field: str, default: str | None) -> str | None:
        value = self.record.get(self.fields.get(field, field))
        if is_missing(value):
            return default
        if not isinstance(value, str):
            raise self._wrong_type(field, value, "a string")
        return value if value.strip() else default

    def optional_id(self, field: str) -> str | None:
        value = self.record.get(self.fields.get(field, field))
        if is_missing(value):
            return None
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise self._wrong_type(field, value, "a string or an integer")
        return value.strip() or None


def _records(records: list[dict[str, Any]], label: str, fields: dict[str, str]):
    for i, record in enumerate(records, start=1):
        yield _Record(record, record.get(WHERE) or f"{label} record {i}", fields)


def _check_unique(rows: list[dict[str, Any]], wheres: list[str], key: str, label: str) -> None:
    first_seen: dict[str, str] = {}
    for row, where in zip(rows, wheres, strict=True):
        value = row[key]
        if value in first_seen:
            raise DataError(
                f"{label}: duplicate {key} {value!r} at {first_seen[value]} and {where}"
            )
        first_seen[value] = where


def to_prompts(
    records: list[dict[str, Any]], source_label: str, fields: dict[str, str]
) -> list[dict[str, Any]]:
    """Validated prompt dicts with keys id, family, instruction, input, reference.

    The default id is a content hash of instruction and input, so re-reading the same file gives the
    same ids (and the same train/val/test split); two identical prompts are reported as duplicates.
    """
    _check_mapping(fields, PROMPT_FIELDS, source_label)
    rows, wheres = [], []
    for rec in _records(records, source_label, fields):
        instruction = rec.required_text("instruction")
        input_text = rec.optional_text("input", "")
        rows.append(
            {
                "id": rec.optional_id("id") or content_hash(instruction, input_text or ""),
                "family": rec.optional_text("family", DEFAULT_FAMILY),
                "instruction": instruction,
                "input": input_text,
                "reference": rec.optional_text("reference", None),
            }
        )
        wheres.append(rec.where)
    _check_unique(rows, wheres, "id", source_label)
    return rows


def to_documents(
    records: list[dict[str, Any]], source_label: str, fields: dict[str, str]
) -> list[dict[str, Any]]:
    """Validated document dicts with keys doc_id, title, text; doc_id defaults to a text hash."""
    _check_mapping(fields, DOCUMENT_FIELDS, source_label)
    rows, wheres = [], []
    for rec in _records(records, source_label, fields):
        text = rec.required_text("text")
        rows.append(
            {
                "doc_id": rec.optional_id("doc_id") or content_hash(text),
                "title": rec.optional_text("title", ""),
                "text": text,
            }
        )
        wheres.append(rec.where)
    _check_unique(rows, wheres, "doc_id", source_label)
    return rows


def to_corpus_texts(
    records: list[dict[str, Any]], source_label: str, fields: dict[str, str]
) -> list[str]:
    """The required ``text`` of every record, in order."""
    _check_mapping(fields, CORPUS_FIELDS, source_label)
    return [rec.required_text("text") for rec in _records(records, source_label, fields)]
