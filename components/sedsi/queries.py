"""Labelled queries for SE-DSI evaluation: a queries file plus a qrels file -> queries and qrels.

Usage::

    from components.sedsi.queries import load_queries, split_queries

    lq = load_queries("queries.jsonl", "qrels.tsv", doc_ids)    # doc_ids: the collection's doc ids
    lq.queries      # {"1": "what similarity laws ...", ...}       qid -> query text, in file order
    lq.qrels        # {"1": {"184": 2, "29": 2, ...}, ...}          qid -> {doc_id: grade}
    lq.skipped      # {"qrels_unknown_doc": 0, "qrels_unknown_query": 0, "queries_without_relevant": 0}
    train, test = split_queries(lq, train_share=0.8, seed=0)
    scores = evaluate_run(run, test.qrels)                          # components.sedsi.metrics

Formats (``format="auto"`` picks one per file from its suffix, else from its first non-blank line; a
single "jsonl" or "trec" forces both files, a pair ``(queries_format, qrels_format)`` forces each):

- queries JSONL: one object per line; the id is the first present (non-null) field of ``qid``,
  ``query_id``, ``id`` and the text the first present of ``query``, ``text``, ``title``;
- queries TREC topics: ``<top> <num> Number: 401 <title> ... </top>`` blocks; the id is the ``<num>``
  text without a leading "Number:", the query is the ``<title>`` text (up to the next tag, lines
  joined, a leading "Topic:" dropped); ``<desc>``/``<narr>`` are ignored;
- qrels JSONL: the query id under ``qid``/``query_id``/``query-id``, the doc id under
  ``doc_id``/``docno``/``docid``/``corpus-id``, the grade under ``relevance``/``grade``/``rel``/``score``;
- qrels text ("trec", also spelled "tsv"): tab- or whitespace-separated columns, either after a header
  line naming them (same aliases; other columns such as ``iter`` are ignored), or without a header as
  TREC ``qid iter docno rel`` (4 columns) or ``qid docno rel`` (3 columns).

Blank lines are allowed everywhere. Ids are strings (a JSON integer id becomes its ``str``; no other
normalisation, so a topic "051" and a qrels "51" do not match). Query texts are stripped.

Grades are kept as given, 0 and negative ones included; ``components.sedsi.metrics`` counts a document
as relevant when its grade is >= 1. What is dropped is counted in ``skipped``, never silent:

- ``qrels_unknown_query``: judgements for a qid that is not in the queries file (always skipped; such
  rows are not checked against ``doc_ids``);
- ``qrels_unknown_doc``: judgements naming a doc id not in ``doc_ids``, with ``on_unknown_doc="skip"``
  (the default "fail" raises, naming the first few and the count);
- ``queries_without_relevant``: queries with no judgement, none left after skipping, or none with a
  grade >= 1: they cannot be evaluated and are left out of both ``queries`` and ``qrels``.

Bad input raises ``DataError`` (a ``ValueError``) whose message starts ``<path>:<line>:``: invalid JSON,
a missing or empty id/text field, a non-integer grade, a duplicate qid in the queries, a duplicate
(qid, doc_id) in the qrels, a malformed TREC block or qrels row. An empty result raises too.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.data.errors import DataError

QUERY_ID_FIELDS = ("qid", "query_id", "id")
QUERY_TEXT_FIELDS = ("query", "text", "title")
QREL_QID_FIELDS = ("qid", "query_id", "query-id")
QREL_DOC_FIELDS = ("doc_id", "docno", "docid", "corpus-id")
QREL_GRADE_FIELDS = ("relevance", "grade", "rel", "score")
SKIP_KEYS = ("qrels_unknown_doc", "qrels_unknown_query", "queries_without_relevant")

JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json-lines"}
QRELS_TEXT_SUFFIXES = {".tsv", ".txt", ".qrels", ".trec"}
QUERY_FORMATS = ("auto", "jsonl", "trec")
QREL_FORMATS = ("auto", "jsonl", "trec", "tsv")
MAX_LISTED = 5

_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z]+)\s*>")
_INT = re.compile(r"[+-]?\d+")


@dataclass
class LabelledQueries:
    """Queries that can be evaluated and their judgements.

    queries: qid -> query text, in file order; qrels: qid -> {doc_id: grade} for the same qids (grades as
    given, each query having at least one grade >= 1); skipped: reason -> count of what was dropped while
    loading (every key of ``SKIP_KEYS`` present)."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_KEYS, 0))

    def __len__(self) -> int:
        return len(self.queries)


# ------------------------------------------------------------------------------------------- reading
def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every line; a decoding error names its line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid UTF-8: {err}") from None


def _first_non_blank(path: str) -> str | None:
    for _, line in _lines(path):
        if line.strip():
            return line.strip()
    return None


def _json_objects(path: str, how: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``path:line``, object) for every non-blank line of a JSON-lines file."""
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: invalid JSON ({how}): {err}") from None
        if not isinstance(value, dict):
            raise DataError(f"{where}: expected a JSON object per line, got {type(value).__name__}")
        yield where, value


def _pick(obj: dict[str, Any], names: tuple[str, ...], where: str, what: str) -> tuple[str, Any]:
    """(field name, value) of the first of `names` present in `obj` with a non-null value."""
    for name in names:
        if obj.get(name) is not None:
            return name, obj[name]
    raise DataError(
        f"{where}: missing {what} field: expected one of {list(names)}; fields present: {sorted(obj)}"
    )


def _as_id(value: Any, where: str, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise DataError(
            f"{where}: field {name!r} must be a string or an integer, got {type(value).__name__}: {value!r:.80}"
        )
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: field {name!r} is empty")
    return text


def _as_grade(value: Any, where: str, name: str) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value.strip())
    raise DataError(f"{where}: field {name!r} must be an integer grade, got {type(value).__name__}: {value!r:.80}")


# ------------------------------------------------------------------------------------------- formats
def _resolve(path: str, fmt: str, kind: str) -> tuple[str, str]:
    """(format, how it was chosen) for `path`; kind is "queries" or "qrels"."""
    if fmt != "auto":
        return ("trec" if fmt == "tsv" else fmt), f"format={fmt!r}"
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl", f"format detected from the {suffix} suffix"
    if kind == "qrels" and suffix in QRELS_TEXT_SUFFIXES:
        return "trec", f"format detected from the {suffix} suffix"
    first = _first_non_blank(path)
    if first is None:
        raise DataError(f"{path}: the {kind} file is empty")
    if first.startswith("{"):
        return "jsonl", "format detected from content (a JSON object)"
    if kind == "qrels":
        return "trec", "format detected from content (not JSON)"
    if first.startswith("<"):
        return "trec", "format detected from content (a tag)"
    raise DataError(
        f"{path}: cannot tell the queries format: the first non-blank line is neither a JSON object nor a "
        f"TREC <top> tag: {first!r:.80}; set format='jsonl' or 'trec'"
    )


def _split_format(fmt: str | tuple[str, str]) -> tuple[str, str]:
    q_fmt, r_fmt = (fmt, fmt) if isinstance(fmt, str) else tuple(fmt)
    if q_fmt not in QUERY_FORMATS:
        raise ValueError(f"queries format {q_fmt!r} must be one of {list(QUERY_FORMATS)}")
    if r_fmt not in QREL_FORMATS:
        raise ValueError(f"qrels format {r_fmt!r} must be one of {list(QREL_FORMATS)}")
    return q_fmt, r_fmt


# ------------------------------------------------------------------------------------------- queries
def _queries_jsonl(path: str, how: str) -> Iterator[tuple[str, str, str]]:
    for where, obj in _json_objects(path, how):
        id_name, id_value = _pick(obj, QUERY_ID_FIELDS, where, "query id")
        qid = _as_id(id_value, where, id_name)
        text_name, text = _pick(obj, QUERY_TEXT_FIELDS, where, "query text")
        if not isinstance(text, str):
            raise DataError(f"{where}: field {text_name!r} must be a string, got {type(text).__name__}: {text!r:.80}")
        if not text.strip():
            raise DataError(f"{where}: field {text_name!r} (the query text) is empty")
        yield where, qid, text.strip()


def _queries_trec(path: str) -> Iterator[tuple[str, str, str]]:
    lines = list(_lines(path))
    content = "".join(line for _, line in lines)
    starts, offset = [], 0  # character offset of each line start, to turn positions into line numbers
    for _, line in lines:
        starts.append(offset)
        offset += len(line)

    def line_of(pos: int) -> int:
        lo, hi = 0, len(starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    tags = list(_TAG.finditer(content))
    block_start: int | None = None  # index into tags of the open <top>
    last_end = 0
    for i, tag in enumerate(tags):
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        if name != "top":
            if block_start is None:
                raise DataError(f"{path}:{line_of(tag.start())}: tag {tag.group(0)!r} outside a <top> ... </top> block")
            continue
        if not closing:
            if block_start is not None:
                raise DataError(
                    f"{path}:{line_of(tags[block_start].start())}: <top> block not closed before the next <top> "
                    f"(line {line_of(tag.start())})"
                )
            stray = content[last_end:tag.start()].strip()
            if stray:
                raise DataError(f"{path}:{line_of(last_end + content[last_end:].index(stray[0]))}: text outside a "
                                f"<top> block: {stray!r:.60}")
            block_start = i
            continue
        if block_start is None:
            raise DataError(f"{path}:{line_of(tag.start())}: </top> without an opening <top>")
        yield _trec_topic(path, content, tags[block_start:i + 1], line_of)
        block_start, last_end = None, tag.end()
    if block_start is not None:
        raise DataError(f"{path}:{line_of(tags[block_start].start())}: <top> block not closed (no </top>)")
    stray = content[last_end:].strip()
    if stray:
        raise DataError(f"{path}:{line_of(last_end + content[last_end:].index(stray[0]))}: text outside a <top> "
                        f"block: {stray!r:.60}")


def _trec_topic(path: str, content: str, tags: list[re.Match], line_of) -> tuple[str, str, str]:
    """(where, qid, title) of one block; `tags` runs from its <top> to its </top>."""
    where = f"{path}:{line_of(tags[0].start())}"
    found: dict[str, tuple[int, str]] = {}
    for tag, nxt in zip(tags[:-1], tags[1:]):
        name = tag.group(2).lower()
        if tag.group(1) == "/" or name not in ("num", "title"):
            continue
        if name in found:
            raise DataError(f"{path}:{line_of(tag.start())}: second <{name}> in the <top> block at {where}")
        found[name] = (line_of(tag.start()), " ".join(content[tag.end():nxt.start()].split()))
    for name in ("num", "title"):
        if name not in found:
            raise DataError(f"{where}: <top> block has no <{name}> field")
    num_line, num = found["num"]
    num = re.sub(r"^number\s*:\s*", "", num, flags=re.IGNORECASE).strip()
    if not num:
        raise DataError(f"{path}:{num_line}: field <num> (the query id) is empty")
    title_line, title = found["title"]
    title = re.sub(r"^topic\s*:\s*", "", title, flags=re.IGNORECASE).strip()
    if not title:
        raise DataError(f"{path}:{title_line}: field <title> (the query text) is empty")
    return where, num, title


def _read_queries(path: str, fmt: str) -> dict[str, tuple[str, str]]:
    """qid -> (text, where), in file order."""
    fmt, how = _resolve(path, fmt, "queries")
    rows = _queries_jsonl(path, how) if fmt == "jsonl" else _queries_trec(path)
    queries: dict[str, tuple[str, str]] = {}
    for where, qid, text in rows:
        if qid in queries:
            raise DataError(f"{where}: duplicate query id {qid!r} (first at {queries[qid][1]})")
        queries[qid] = (text, where)
    if not queries:
        raise DataError(f"{path}: no query in the file ({how})")
    return queries


# --------------------------------------------------------------------------------------------- qrels
def _qrels_jsonl(path: str, how: str) -> Iterator[tuple[str, str, str, int]]:
    for where, obj in _json_objects(path, how):
        q_name, q_value = _pick(obj, QREL_QID_FIELDS, where, "query id")
        d_name, d_value = _pick(obj, QREL_DOC_FIELDS, where, "doc id")
        g_name, g_value = _pick(obj, QREL_GRADE_FIELDS, where, "grade")
        yield where, _as_id(q_value, where, q_name), _as_id(d_value, where, d_name), _as_grade(g_value, where, g_name)


def _columns(line: str) -> list[str]:
    return [c.strip() for c in line.split("\t")] if "\t" in line else line.split()


def _qrels_text(path: str) -> Iterator[tuple[str, str, str, int]]:
    width = None
    header = False
    first_row = True
    cols: tuple[int, int, int] = (0, 1, 2)  # positions of qid, doc id, grade
    names = ("qid", "docno", "rel")
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        row = _columns(line.rstrip("\r\n"))
        if width is None:  # the first non-blank line: a header, or the first row of a headerless file
            width = len(row)
            lowered = [c.lower() for c in row]
            aliases = set(QREL_QID_FIELDS) | set(QREL_DOC_FIELDS) | set(QREL_GRADE_FIELDS)
            if aliases & set(lowered):
                positions = []
                for what, fields in (("query id", QREL_QID_FIELDS), ("doc id", QREL_DOC_FIELDS),
                                     ("grade", QREL_GRADE_FIELDS)):
                    hits = [lowered.index(f) for f in fields if f in lowered]
                    if not hits:
                        raise DataError(
                            f"{where}: header line {row} names no {what} column; expected one of {list(fields)}"
                        )
                    positions.append(hits[0])
                cols = (positions[0], positions[1], positions[2])
                names = tuple(row[p] for p in cols)
                header = True
                continue
            if width == 4:
                cols, names = (0, 2, 3), ("qid", "docno", "rel")
            elif width != 3:
                raise DataError(
                    f"{where}: expected 3 columns (qid docno rel) or 4 (qid iter docno rel) without a header, got "
                    f"{width}: {line.strip()!r:.80}; or start the file with a header line naming the columns "
                    f"(query id: {list(QREL_QID_FIELDS)}, doc id: {list(QREL_DOC_FIELDS)}, "
                    f"grade: {list(QREL_GRADE_FIELDS)})"
                )
        if len(row) != width:
            raise DataError(
                f"{where}: expected {width} columns like the {'header' if header else 'first row'}, got {len(row)}: "
                f"{line.strip()!r:.80}"
            )
        qid, doc_id, grade = (row[c] for c in cols)
        try:
            grade_value = _as_grade(grade, where, names[2])
        except DataError as err:
            if first_row and not header:  # most likely a header with column names we do not know
                raise DataError(
                    f"{err}; if this is a header line, name its columns (query id: {list(QREL_QID_FIELDS)}, "
                    f"doc id: {list(QREL_DOC_FIELDS)}, grade: {list(QREL_GRADE_FIELDS)})"
                ) from None
            raise
        first_row = False
        yield where, _as_id(qid, where, names[0]), _as_id(doc_id, where, names[1]), grade_value


def _read_qrels(path: str, fmt: str) -> list[tuple[str, str, str, int]]:
    fmt, how = _resolve(path, fmt, "qrels")
    rows = list(_qrels_jsonl(path, how) if fmt == "jsonl" else _qrels_text(path))
    first_seen: dict[tuple[str, str], str] = {}
    for where, qid, doc_id, _ in rows:
        if (qid, doc_id) in first_seen:
            raise DataError(
                f"{where}: duplicate judgement for query {qid!r} and doc {doc_id!r} "
                f"(first at {first_seen[qid, doc_id]})"
            )
        first_seen[qid, doc_id] = where
    if not rows:
        raise DataError(f"{path}: no judgement in the qrels file ({how})")
    return rows


# ---------------------------------------------------------------------------------------------- API
def load_queries(
    queries_path: str | Path, qrels_path: str | Path, doc_ids: Collection[str],
    format: str | tuple[str, str] = "auto", on_unknown_doc: str = "fail",
) -> LabelledQueries:
    """The queries of `queries_path` that have a relevant judgement in `qrels_path`, with those judgements.

    `doc_ids` are the collection's documents; `format` is "auto", "jsonl" or "trec" for both files, or a pair
    (queries format, qrels format); `on_unknown_doc` is "fail" or "skip". See the module docstring for the
    formats, what is skipped and what raises."""
    if on_unknown_doc not in ("fail", "skip"):
        raise ValueError(f"on_unknown_doc={on_unknown_doc!r} must be 'fail' or 'skip'")
    q_fmt, r_fmt = _split_format(format)
    queries_path, qrels_path = str(queries_path), str(qrels_path)
    known_docs = {str(d) for d in doc_ids}
    queries = _read_queries(queries_path, q_fmt)
    rows = _read_qrels(qrels_path, r_fmt)

    skipped = dict.fromkeys(SKIP_KEYS, 0)
    judged: dict[str, dict[str, int]] = {}
    unknown_docs: list[tuple[str, str]] = []
    unknown_qids: list[str] = []
    for where, qid, doc_id, grade in rows:
        if qid not in queries:
            skipped["qrels_unknown_query"] += 1
            unknown_qids.append(qid)
            continue
        if doc_id not in known_docs:
            skipped["qrels_unknown_doc"] += 1
            unknown_docs.append((where, doc_id))
            continue
        judged.setdefault(qid, {})[doc_id] = grade
    if unknown_docs and on_unknown_doc == "fail":
        listed = ", ".join(f"{where} {doc!r}" for where, doc in unknown_docs[:MAX_LISTED])
        raise DataError(
            f"{qrels_path}: {len(unknown_docs)} judgement(s) name a doc id that is not in the collection "
            f"({len(known_docs)} doc ids), e.g. {listed}; pass on_unknown_doc='skip' to drop and count them"
        )

    kept_queries: dict[str, str] = {}
    kept_qrels: dict[str, dict[str, int]] = {}
    for qid, (text, _) in queries.items():
        grades = judged.get(qid, {})
        if not any(g >= 1 for g in grades.values()):
            skipped["queries_without_relevant"] += 1
            continue
        kept_queries[qid], kept_qrels[qid] = text, grades
    if not kept_queries:
        hint = ""
        if unknown_qids:
            hint = (f"; the qrels name query ids {sorted(set(unknown_qids))[:MAX_LISTED]} not in the queries file, "
                    f"whose ids are e.g. {list(queries)[:MAX_LISTED]} (ids must match exactly)")
        raise DataError(
            f"{queries_path}, {qrels_path}: no query left to evaluate: none of the {len(queries)} queries has a "
            f"judgement with grade >= 1 on a known document (skipped: {skipped}){hint}"
        )
    return LabelledQueries(kept_queries, kept_qrels, skipped)


def _subset(lq: LabelledQueries, qids: set[str]) -> LabelledQueries:
    return LabelledQueries(
        {q: t for q, t in lq.queries.items() if q in qids},
        {q: dict(lq.qrels[q]) for q in lq.queries if q in qids},
        dict(lq.skipped),
    )


def split_queries(lq: LabelledQueries, train_share: float, seed: int) -> tuple[LabelledQueries, LabelledQueries]:
    """(train, eval): round(train_share * n) queries for training, the rest for evaluation; disjoint by qid.

    The order is a seeded hash of each qid (sha256 of "seed:qid"), so the split depends only on the seed and the
    qids: the same on every run and Python version, and a larger train_share only moves queries from eval to
    train. Both parts keep file order and a copy of `lq.skipped` (what loading dropped). train_share 0 puts every
    query in eval, 1 every query in train."""
    if not 0.0 <= train_share <= 1.0:
        raise ValueError(f"train_share={train_share} must be in [0, 1]")
    order = sorted(lq.queries, key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    n_train = int(train_share * len(order) + 0.5)
    train = set(order[:n_train])
    return _subset(lq, train), _subset(lq, set(order[n_train:]))
